"""A table of programs that write in place through views (Note [Views and in-place]).

Each program takes the framework module (`ember` or `torch`) and the leaves made by
`make_leaves`, and returns one tensor. Tests run every program in ember and in PyTorch on the
same inputs and compare the output and every leaf's gradient (tests/core/test_views.py), and
run some of them compiled against eager (tests/graph/test_compile_views.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

LEAF_SHAPES = {"x": (3, 4), "w": (4,), "z": (3, 3), "s": (4, 3)}


def make_leaves(lib, dtype=np.float32, seed=0):
    """The same leaf values for both frameworks, all requiring grad."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in LEAF_SHAPES.items():
        value = rng.standard_normal(shape).astype(dtype)
        out[name] = lib.tensor(value, requires_grad=True)
    return out


@dataclass
class Program:
    name: str
    fn: Callable  # fn(lib, x, w, z, s) -> Tensor
    second_order: bool = False
    compiled: bool = False  # also checked compiled against eager


def _select_mul(lib, x, w, z, s):
    y = x * 2
    y[0].mul_(3)
    return y


def _slice_iadd(lib, x, w, z, s):
    y = x * 2
    y[:, 1:] += z
    return y * x


def _narrow_zero(lib, x, w, z, s):
    y = x.sin()
    y.narrow(1, 1, 2).zero_()
    return y * y


def _view_add(lib, x, w, z, s):
    y = x * 2
    y.view(4, 3).add_(s)
    return y.tanh()


def _transpose_copy(lib, x, w, z, s):
    y = x * 1
    y.t().copy_(s)
    return y * x


def _diagonal_fill(lib, x, w, z, s):
    y = x.sin()
    y.diagonal().fill_(0)
    return y * w


def _diagonal_offset_mul(lib, x, w, z, s):
    y = x * w
    y.diagonal(1).mul_(z[0])
    return y


def _mask_setitem(lib, x, w, z, s):
    y = x * 2
    y[x > 0.3] = 0.5
    y[x < -0.3] = w.sum()
    return y


def _index_setitem(lib, x, w, z, s):
    y = x * 2
    y[[0, 2]] = w
    y[:, [1, 3]] = z[:, :2]
    return y * y


def _index_setitem_on_view(lib, x, w, z, s):
    y = x * 2
    y[1][[0, 3]] = w[:2] * 3
    return y


def _chain_of_views(lib, x, w, z, s):
    y = x * 2
    v = y[1:]
    v2 = v[:, 1:]
    v2.mul_(w[:3])
    return y + v.sum()


def _base_written_after_view(lib, x, w, z, s):
    y = x * w
    v = y[:2]
    y.mul_(2)
    y.add_(z[:, :1])
    return v * s[:, 0]


def _view_written_then_other_view(lib, x, w, z, s):
    y = x * 1
    a = y[:, 0]
    b = y[1]
    b.mul_(w)
    return a * z[0] + b.sum()


def _base_without_grad(lib, x, w, z, s):
    b = lib.zeros(3, 4)
    v = b[2]
    b[1].copy_(w)
    b[:, 0].add_(x[:, 1])
    return b * x + v.sum()


def _reshape_chain(lib, x, w, z, s):
    y = x * 2
    y.unsqueeze(0)[0, :, 2].sub_(z[0])
    y.reshape(12)[3:7].mul_(w)
    return y


def _transposed_slice(lib, x, w, z, s):
    y = (x * 1).t()
    y[1:, :2].mul_(s[1:, :2])
    return y


def _vector_element(lib, x, w, z, s):
    y = w * 2
    y[0].mul_(3)
    y[-1] = x[0, 0] * z[0, 0]
    return y


def _many_writes(lib, x, w, z, s):
    y = x * 2
    y[0].mul_(3)
    y.add_(x)
    y[:, 1].div_(2)
    y.t()[2:].addcmul_(s[2:], s[2:])
    return y.exp()


def _no_grad_write(lib, x, w, z, s):
    y = x * 2
    with lib.no_grad():
        y[0].mul_(3)
    return y * w


PROGRAMS = [
    Program("select_mul", _select_mul, second_order=True, compiled=True),
    Program("slice_iadd", _slice_iadd, compiled=True),
    Program("narrow_zero", _narrow_zero),
    Program("view_add", _view_add, compiled=True),
    Program("transpose_copy", _transpose_copy, second_order=True, compiled=True),
    Program("diagonal_fill", _diagonal_fill, compiled=True),
    Program("diagonal_offset_mul", _diagonal_offset_mul, second_order=True),
    Program("mask_setitem", _mask_setitem),
    Program("index_setitem", _index_setitem, compiled=True),
    Program("index_setitem_on_view", _index_setitem_on_view),
    Program("chain_of_views", _chain_of_views, second_order=True, compiled=True),
    Program("base_written_after_view", _base_written_after_view, compiled=True),
    Program("view_written_then_other_view", _view_written_then_other_view),
    Program("base_without_grad", _base_without_grad, compiled=True),
    Program("reshape_chain", _reshape_chain),
    Program("transposed_slice", _transposed_slice),
    Program("vector_element", _vector_element),
    Program("many_writes", _many_writes, second_order=True),
    Program("no_grad_write", _no_grad_write),
]


# --- seeded random programs: chains of views written and read in turn ----------------------
def random_program(seed):
    """A list of (view chain, action, k): each step takes a view chain of the working tensor
    and writes it in place or reads it; k == 0 also reads the first view taken (by then
    possibly stale)."""
    rng = np.random.default_rng(seed)
    program = []
    for _ in range(int(rng.integers(2, 7))):
        chain, shape = [], [4, 5]
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["slice", "select", "t", "diagonal", "unsqueeze"]))
            if kind == "slice" and shape[0] > 1:
                a = int(rng.integers(0, shape[0] - 1))
                b = int(rng.integers(a + 1, shape[0] + 1))
                chain.append(("slice", a, b))
                shape = [b - a] + shape[1:]
            elif kind == "select" and len(shape) >= 2:
                chain.append(("select", int(rng.integers(0, shape[0]))))
                shape = shape[1:]
            elif kind == "t" and len(shape) == 2:
                chain.append(("t",))
                shape = shape[::-1]
            elif kind == "diagonal" and len(shape) == 2:
                offset = int(rng.integers(-1, 2))
                chain.append(("diagonal", offset))
                n = (
                    min(shape[0], shape[1] - offset)
                    if offset >= 0
                    else min(shape[0] + offset, shape[1])
                )
                shape = [max(n, 0)]
            elif kind == "unsqueeze":
                chain.append(("unsqueeze",))
                shape = [1] + shape
        action = str(rng.choice(["mul", "add", "fill", "copy", "square", "read", "sin"]))
        program.append((tuple(chain), action, int(rng.integers(0, 4))))
    return program


def _view_of(t, chain):
    for step in chain:
        if step[0] == "slice":
            t = t[step[1] : step[2]]
        elif step[0] == "select":
            t = t[step[1]]
        elif step[0] == "t":
            t = t.t()
        elif step[0] == "diagonal":
            t = t.diagonal(step[1])
        else:
            t = t.unsqueeze(0)
    return t


def random_program_body(program, x, w):
    """The program's work on leaves x and w (any framework): returns (y, loss)."""
    y = x * 1.5
    total = (x * 0).sum() + (w * 0).sum()
    views = []
    for chain, action, k in program:
        v = _view_of(y, chain)
        other = _view_of(w, chain)
        if action == "mul":
            v.mul_(other)
        elif action == "add":
            v.add_(other * 2)
        elif action == "fill":
            v.fill_(0.5)
        elif action == "copy":
            v.copy_(other.sin())
        elif action == "square":
            v.copy_(v * 2.0 + 1.0)
        elif action == "read":
            total = total + (v * 2.0).sum() + (v.detach().clone() * other).sum()
        else:  # "sin" saves v: a later write to it makes backward refuse, in both frameworks
            total = total + v.sin().sum()
        views.append(v)
        if k == 0:
            total = total + views[0].sum() * 3.0
    return y, (y * y).sum() + total


def run_random_program(lib, program, seed):
    """Run `program` on seeded leaves x and w; returns (loss, x.grad, w.grad) as NumPy."""
    rng = np.random.default_rng(seed)
    x = lib.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    w = lib.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    _, loss = random_program_body(program, x, w)
    loss.backward()
    return loss.detach().numpy(), x.grad.numpy(), w.grad.numpy()
