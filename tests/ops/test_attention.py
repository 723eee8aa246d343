"""The fused attention op (`fused_attention`, Note [Attention blocks] in
ember/backend/attention_kernels.py) and its backward (`fused_attention_grad`, Note [Attention
training] in ember/backend/attention_train_kernels.py) at sizes that take their compiled
kernels: against their NumPy reference forwards and the decomposition, against PyTorch's
scaled_dot_product_attention, the same bits on 1 and 2 threads, dropout with fused_dropout's
mask, and which path F.scaled_dot_product_attention takes."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember._util.errors import ShapeError
from ember.backend import attention_kernels as A
from ember.backend import attention_train_kernels as AT
from ember.backend import blas
from ember.backend import numba_kernels
from ember.backend import transformer_kernels as K
from ember.ops import fused as Fz
from ember.ops import nn as N

needs_numba = pytest.mark.skipif(
    not numba_kernels.available(),
    reason="numba is not installed (the `fast` extra) or EMBER_FAST_KERNELS=0",
)
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _even_when_the_machine_is_busy(monkeypatch):
    """Run the blocks on the pool even on a loaded machine (Note [Overloaded machine])."""
    from ember.backend import parallel

    monkeypatch.setattr(parallel, "_LOAD_LIMIT", float("inf"))
    monkeypatch.setattr(parallel, "_load_state", [0.0, False])


def _close(ours, ref, dtype, what):
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-12, 1e-12)
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, what
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol * scale, err_msg=what)


def _padding(rng, batch, keys, dtype):
    """BERT's additive key-padding mask (batch, 1, 1, keys): finfo.min on padded keys."""
    mask = np.zeros((batch, 1, 1, keys), dtype)
    for b in range(batch):
        mask[b, ..., rng.integers(1, keys) :] = np.finfo(dtype).min
    return mask


# (name, q shape, k shape, v shape, mask shape or kind); every case exceeds COMPILED_MIN_SIZE
CASES = [
    ("minilm-padding", (4, 12, 128, 32), (4, 12, 128, 32), (4, 12, 128, 32), "padding"),
    ("no-mask", (2, 3, 128, 200), (2, 3, 128, 200), (2, 3, 128, 200), None),
    ("causal", (2, 4, 96, 16), (2, 4, 96, 16), (2, 4, 96, 24), "causal"),
    ("cross-lengths", (2, 3, 80, 8), (2, 3, 150, 8), (2, 3, 150, 5), (2, 3, 80, 150)),
    ("heads-3d", (6, 130, 8), (6, 120, 8), (6, 120, 4), (130, 120)),
    ("long-rows-in-blocks", (1, 2, 600, 8), (1, 2, 600, 8), (1, 2, 600, 8), (1, 1, 1, 600)),
]


def _arrays(case, dtype, seed=0):
    name, qs, ks, vs, mask = case
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in (qs, ks, vs))
    if mask == "padding":
        m = _padding(rng, qs[0], ks[-2], dtype)
    elif mask == "causal":
        m = np.where(np.tril(np.ones((qs[-2], ks[-2]), bool)), 0.0, -np.inf).astype(dtype)
    elif mask is not None:
        m = rng.standard_normal(mask).astype(dtype)
    else:
        m = None
    return q, k, v, m


def _kernel(q, k, v, m, p=0.0, seed=0):
    rest = [a for a, used in ((m, m is not None), (np.array(seed), p > 0.0)) if used]
    return Fz._attention_kernel(q, k, v, *rest, scale=0.3, masked=m is not None, p=p)


def _reference(q, k, v, m, p=0.0, seed=0):
    rest = [a for a, used in ((m, m is not None), (np.array(seed), p > 0.0)) if used]
    return Fz._attention_forward(np, q, k, v, *rest, scale=0.3, masked=m is not None, p=p)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_kernel_equals_the_reference_forward(case, dtype):
    q, k, v, m = _arrays(case, dtype)
    ours = _kernel(q, k, v, m)
    assert ours is not None, "the kernel declined a case it covers"
    _close(ours, _reference(q, k, v, m), dtype, case[0])


# below COMPILED_MIN_SIZE scores: NumPy passes, numba or not (Note [Small attention])
SMALL_CASES = [
    ("minilm-1x16", (1, 12, 16, 32), (1, 12, 16, 32), (1, 12, 16, 32), "padding"),
    ("no-mask", (2, 3, 7, 5), (2, 3, 9, 5), (2, 3, 9, 4), None),
    ("causal", (1, 2, 12, 8), (1, 2, 12, 8), (1, 2, 12, 3), "causal"),
    ("heads-3d-full-mask", (3, 5, 4), (3, 6, 4), (3, 6, 2), (3, 5, 6)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda c: c[0])
def test_small_path_equals_the_reference_forward(case, dtype):
    q, k, v, m = _arrays(case, dtype)
    assert q.shape[-2] * k.shape[-2] * np.prod(q.shape[:-2]) < A.COMPILED_MIN_SIZE
    if case[0] == "minilm-1x16":  # strided heads of the (batch, seq, heads, dim) projections
        q, k, v = (
            np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for a in (q, k, v)
        )
    with numba_kernels.disable_for_tests():
        ours = _kernel(q, k, v, m)
    assert ours is not None, "the small path declined a case it covers"
    _close(ours, _reference(q, k, v, m), dtype, case[0])
    if case[0] != "causal":
        return
    q[0, 1, 4, 0] = np.nan  # one NaN query row; a row with every key masked is NaN too
    m = np.broadcast_to(m, (1, 2, 12, 12)).copy()
    m[0, 0, 2, :] = -np.inf
    ours, ref = np.asarray(_kernel(q, k, v, m)), np.asarray(_reference(q, k, v, m))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    assert np.isnan(ref[0, 1, 4]).all() and np.isnan(ref[0, 0, 2]).all()
    _close(ours[~np.isnan(ref)], ref[~np.isnan(ref)], dtype, "finite rows")


# every broadcast form of the mask the small path folds (Note [Small attention]), with NaN
# scores, +inf and -inf masks and a row of -inf
SMALL_MASK_FORMS = [
    ("key-padding", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (2, 1, 1, 6)),
    ("per-batch-rows", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (2, 1, 5, 6)),
    ("per-head", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (1, 3, 5, 6)),
    ("full", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (2, 3, 5, 6)),
    ("one-key-column", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (2, 3, 5, 1)),
]


@needs_numba
@pytest.mark.parametrize("case", SMALL_CASES + SMALL_MASK_FORMS, ids=lambda c: c[0])
def test_small_path_gives_the_compiled_kernels_bits(case, monkeypatch):
    """Float32 small inputs take their probabilities from the NumPy twin until the compiled
    `small_probs` has loaded, then from it: the same bits, NaN where it gives NaN, so results
    do not depend on the process's history (Note [Small attention])."""
    monkeypatch.setattr(K, "WARM_UP_AFTER", None)
    monkeypatch.setattr(K, "_READY", {})
    q, k, v, m = _arrays(case, np.float32, seed=5)
    if case in SMALL_MASK_FORMS:
        m = m * 3.0
        m.reshape(-1)[:3] = [-np.inf, np.inf, 0.0]
    if case[0] == "full":
        m[1, 2, 3, :] = -np.inf  # every key masked: a NaN row
        q[0, 1, 2, 0] = np.nan
    twin = np.asarray(_kernel(q, k, v, m)).copy()
    K._READY[(A.SMALL_GROUP, "small_probs", "f")] = K._kernel(A.SMALL_GROUP, "small_probs", False)
    compiled = np.asarray(_kernel(q, k, v, m))
    np.testing.assert_array_equal(compiled, twin, err_msg=case[0])
    finite = ~np.isnan(twin)
    assert finite.any() and (case[0] != "full" or not finite.all())
    _close(twin[finite], np.asarray(_reference(q, k, v, m))[finite], np.float32, case[0])


def test_small_path_with_dropout_runs_the_reference():
    q, k, v, m = _arrays(SMALL_CASES[0], np.float32)
    assert _kernel(q, k, v, m, p=0.1, seed=3) is None


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kernel_rows_with_nan_inf_or_every_key_masked_match_the_reference(dtype):
    """The row pass's max over order keys and exp of x - max: a NaN score or key (of either
    sign: Note [Row max over order keys]) turns its rows NaN, an infinite score NaN (inf - inf), a
    row whose keys are all -inf NaN, as in the reference (and torch's decomposition)."""
    q, k, v, m = _arrays(CASES[0], dtype, seed=4)
    q[0, 0, 3, 5] = np.nan  # one query row of head 0
    k[1, 2, 7, 0] = np.inf  # every row of (1, 2) that does not mask key 7
    m = np.broadcast_to(m, (4, 12, 128, 128)).copy()
    m[2, 5, 9, :] = -np.inf  # one row with every key masked
    m[3, 1, 0, 4] = np.nan
    m[3, 2, 1, 6] = np.copysign(np.nan, -1.0)  # sign bit set: the lowest order key
    ours, ref = np.asarray(_kernel(q, k, v, m)), np.asarray(_reference(q, k, v, m))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    assert np.isnan(ref[0, 0, 3]).all() and np.isnan(ref[2, 5, 9]).all()
    assert np.isnan(ours[3, 1, 0]).all() and np.isnan(ours[3, 2, 1]).all()
    finite = ~np.isnan(ref)
    _close(ours[finite], ref[finite], dtype, "finite rows")


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kernel_dropout_keeps_what_fused_dropout_keeps(dtype):
    q, k, v, m = _arrays(CASES[0], dtype, seed=1)
    ours = _kernel(q, k, v, m, p=0.1, seed=987654321)
    _close(ours, _reference(q, k, v, m, p=0.1, seed=987654321), dtype, "dropout")
    # another seed drops other probabilities: the outputs differ far beyond rounding
    other = _kernel(q, k, v, m, p=0.1, seed=5)
    assert np.abs(np.asarray(other) - np.asarray(ours)).max() > 1e-2


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_and_two_threads_give_the_same_bits(dtype):
    q, k, v, m = _arrays(CASES[0], dtype, seed=2)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        serial = [_kernel(q, k, v, m), _kernel(q, k, v, m, p=0.2, seed=3)]
        ember.set_num_threads(2)
        threaded = [_kernel(q, k, v, m), _kernel(q, k, v, m, p=0.2, seed=3)]
    finally:
        ember.set_num_threads(before)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


needs_mkl = pytest.mark.skipif(
    not blas.mkl_available(), reason="MKL is not installed (the `mkl` extra) or EMBER_BLAS=openblas"
)


def _joined_heads(q, k, v):
    """q, k, v as the strided views MiniLM's inference passes: heads of one (B, L, 3, H, d)
    product (Note [Joined projections] in ember/autograd/packed.py)."""
    joined = np.stack([a.transpose(0, 2, 1, 3) for a in (q, k, v)], axis=2)
    return tuple(joined[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


# operand layouts the MKL blocks read as they are or copy first (Note [Blocks on MKL])
LAYOUTS = {
    "joined-heads": _joined_heads,
    "transposed-last-dims": lambda q, k, v: (
        q,
        np.ascontiguousarray(k.swapaxes(-1, -2)).swapaxes(-1, -2),
        v,
    ),
    "reversed-queries": lambda q, k, v: (q[:, :, ::-1].copy()[:, :, ::-1], k, v),
    "heads-broadcast": lambda q, k, v: (
        q,
        np.broadcast_to(k[:, :1], k.shape),
        np.broadcast_to(v[:, :1], v.shape),
    ),
}


@needs_numba
@needs_mkl
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_mkl_blocks_read_strided_operands(layout, dtype):
    q, k, v, m = _arrays(CASES[0], dtype, seed=6)
    q, k, v = LAYOUTS[layout](q, k, v)
    assert not all(a.flags.c_contiguous for a in (q, k, v))
    _close(_kernel(q, k, v, m), _reference(q, k, v, m), dtype, layout)
    plain = [np.ascontiguousarray(a) for a in (q, k, v)]
    np.testing.assert_array_equal(_kernel(q, k, v, m), _kernel(*plain, m), err_msg=layout)


@needs_numba
@needs_mkl
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mkl_blocks_serial_build_and_the_pool_path(dtype, monkeypatch):
    """The serial build (a forked child, an overloaded machine) gives the parallel build's
    bits; the blocks on ember's pool with NumPy's BLAS (no MKL) agree within rounding."""
    from ember.backend import parallel

    q, k, v, m = _arrays(CASES[2], dtype, seed=7)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        threaded = [_kernel(q, k, v, m), _kernel(q, k, v, m, p=0.2, seed=3)]
        monkeypatch.setattr(parallel, "in_forked_child", lambda: True)
        serial = [_kernel(q, k, v, m), _kernel(q, k, v, m, p=0.2, seed=3)]
        monkeypatch.setattr(A, "_mkl_kernel", lambda dtype, in_parallel: None)
        pool = [_kernel(q, k, v, m), _kernel(q, k, v, m, p=0.2, seed=3)]
    finally:
        ember.set_num_threads(before)
    assert (np.dtype(dtype), False) in A._MKL_KERNELS  # the serial build ran
    for a, b, c in zip(threaded, serial, pool):
        np.testing.assert_array_equal(a, b)
        _close(c, a, dtype, "pool vs MKL blocks")


@needs_numba
def test_the_result_is_laid_out_for_the_output_projection():
    q, k, v, m = _arrays(CASES[0], np.float32)
    out = _kernel(q, k, v, m)
    # (B, H, L, d) as a view of (B, L, H, d): merging the heads is free
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sdpa_inference_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 12, 128, 32)).astype(dtype) for _ in range(3))
    keep = np.ones((2, 1, 1, 128), bool)
    keep[0, ..., 100:] = False
    cases = [
        {"attn_mask": keep},
        {"attn_mask": np.where(keep, 0.0, np.finfo(dtype).min).astype(dtype)},
        {"is_causal": True},
        {},
    ]
    for kwargs in cases:
        with ember.no_grad():
            ours = N.scaled_dot_product_attention(
                *(ember.from_numpy(a) for a in (q, k, v)),
                **{
                    key: ember.from_numpy(a) if key == "attn_mask" else a
                    for key, a in kwargs.items()
                },
            )
        theirs = torch.nn.functional.scaled_dot_product_attention(
            *(torch.from_numpy(a) for a in (q, k, v)),
            **{key: torch.from_numpy(a) if key == "attn_mask" else a for key, a in kwargs.items()},
        )
        _close(ours, theirs.numpy(), dtype, f"vs torch {list(kwargs)}")


def test_sdpa_takes_the_fused_op_with_or_without_gradients(monkeypatch):
    calls = []
    for module, name in ((A, "attention"), (AT, "attention_keep")):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, real=real, name=name: calls.append(name) or real(*a)
        )
    q, k, v, m = _arrays(CASES[0], np.float32)
    tq, tk, tv = (ember.from_numpy(a) for a in (q, k, v))
    with ember.no_grad():
        fused = N.scaled_dot_product_attention(tq, tk, tv, attn_mask=ember.from_numpy(m))
    assert calls == ["attention"]
    tq.requires_grad_()
    recorded = N.scaled_dot_product_attention(tq, tk, tv, attn_mask=ember.from_numpy(m))
    # training: the op that keeps the probabilities (Note [Kept probabilities])
    assert calls == ["attention", "attention_keep"]
    _close(fused, recorded.detach(), np.float32, "inference vs training forward")
    # a mask that records a gradient takes the decomposition
    mask = ember.from_numpy(m).requires_grad_()
    decomposed = N.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
    assert calls == ["attention", "attention_keep"]
    _close(fused, decomposed.detach(), np.float32, "fused vs decomposition")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_fused_op_gradients_equal_the_decompositions(dtype):
    q, k, v, m = _arrays(CASES[0], dtype, seed=4)
    q, k, v = (a[:2, :4] for a in (q, k, v))
    leaves = [ember.from_numpy(np.ascontiguousarray(a)).requires_grad_() for a in (q, k, v)]
    mask = ember.from_numpy(m[:2])
    for p in (0.0, 0.1):
        ember.manual_seed(7)
        ours = Fz.fused_attention(*leaves, mask, scale=0.3, dropout_p=p)
        ember.manual_seed(7)
        ref = N.scaled_dot_product_attention_reference(
            *leaves, attn_mask=mask, scale=0.3, dropout_p=p
        )
        _close(ours.detach(), ref.detach(), dtype, f"forward p={p}")
        cot = ember.from_numpy(np.random.default_rng(5).standard_normal(ref.shape).astype(dtype))
        grads_ours = ember.autograd.grad((ours * cot).sum(), leaves)
        grads_ref = ember.autograd.grad((ref * cot).sum(), leaves)
        for i, (a, b) in enumerate(zip(grads_ours, grads_ref)):
            _close(a, b, dtype, f"gradient of input {i}, p={p}")


def test_without_numba_the_op_runs_its_reference():
    q, k, v, m = _arrays(CASES[2], np.float32)
    args = [ember.from_numpy(a) for a in (q, k, v, m)]
    with_kernel = np.asarray(Fz.fused_attention(*args, scale=0.3))
    with numba_kernels.disable_for_tests():
        assert _kernel(q, k, v, m) is None
        without = np.asarray(Fz.fused_attention(*args, scale=0.3))
    _close(with_kernel, without, np.float32, "numba vs NumPy")


def test_fused_op_refuses_bad_inputs_naming_the_op():
    q = ember.zeros((2, 3, 4))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        Fz.fused_attention(q, ember.zeros((2, 5, 3)), ember.zeros((2, 5, 4)))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        Fz.fused_attention(q, ember.zeros((2, 5, 4)), ember.zeros((2, 6, 4)))
    with pytest.raises(ShapeError, match="mask"):
        Fz.fused_attention(q, ember.zeros((2, 5, 4)), ember.zeros((2, 5, 4)), ember.zeros((4,)))
    with pytest.raises(TypeError, match="one floating dtype"):
        Fz.fused_attention(q, ember.zeros((2, 5, 4), dtype=ember.float64), ember.zeros((2, 5, 4)))


# --- the backward: fused_attention_grad (Note [Attention training]) ---------------------------
def _grad_args(q, k, v, m, p, seed):
    return [a for a, used in ((m, m is not None), (np.array(seed), p > 0.0)) if used]


def _grad_kernel(g, q, k, v, m, p=0.0, seed=0):
    rest = _grad_args(q, k, v, m, p, seed)
    return Fz._attention_grad_kernel(g, None, q, k, v, *rest, scale=0.3, masked=m is not None, p=p)


def _grad_reference(g, q, k, v, m, p=0.0, seed=0):
    rest = _grad_args(q, k, v, m, p, seed)
    return Fz._attention_grad_forward(
        np, g, None, q, k, v, *rest, scale=0.3, masked=m is not None, p=p
    )


def _output_grad(q, v, seed=1):
    shape = q.shape[:-1] + v.shape[-1:]
    return np.random.default_rng(seed).standard_normal(shape).astype(q.dtype)


@needs_numba
@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_grad_kernel_equals_the_reference(case, dtype, p):
    q, k, v, m = _arrays(case, dtype)
    g = _output_grad(q, v)
    ours = _grad_kernel(g, q, k, v, m, p, seed=11)
    assert ours is not None, "the backward kernel declined a case it covers"
    _close(ours, _grad_reference(g, q, k, v, m, p, seed=11), dtype, case[0])


@needs_numba
def test_grad_kernel_takes_strided_heads_and_lays_the_gradients_out_for_the_projections():
    # the heads as split_heads passes them: (B, H, L, d) views of (B, L, H, d) arrays
    q, k, v, m = _arrays(CASES[0], np.float32, seed=6)
    q, k, v = (
        np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for a in (q, k, v)
    )
    g = np.ascontiguousarray(_output_grad(q, v).transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    ours = _grad_kernel(g, q, k, v, m, 0.1, seed=3)
    _close(ours, _grad_reference(g, q, k, v, m, 0.1, seed=3), np.float32, "strided heads")
    leaves = [ember.from_numpy(a).requires_grad_() for a in (q, k, v)]
    out = N.scaled_dot_product_attention(*leaves, attn_mask=ember.from_numpy(m))
    grads = ember.autograd.grad((out * ember.from_numpy(g)).sum(), leaves)
    for grad in grads:  # merging the heads of each gradient is free
        assert grad.numpy().transpose(0, 2, 1, 3).flags.c_contiguous


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_grad_kernel_gives_the_same_bits_on_one_and_two_threads(dtype):
    q, k, v, m = _arrays(CASES[0], dtype, seed=2)
    g = _output_grad(q, v)
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        serial = [_grad_kernel(g, q, k, v, m), _grad_kernel(g, q, k, v, m, 0.2, seed=3)]
        ember.set_num_threads(2)
        threaded = [_grad_kernel(g, q, k, v, m), _grad_kernel(g, q, k, v, m, 0.2, seed=3)]
    finally:
        ember.set_num_threads(before)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_grad_kernel_rows_with_every_key_masked_match_the_reference():
    q, k, v, m = _arrays(CASES[0], np.float64, seed=8)
    m = np.zeros((1, 1, q.shape[-2], k.shape[-2]))
    m[..., 5, :] = -np.inf  # a NaN row, as in the reference and torch
    m[..., 7, 3:] = -np.inf  # one key left
    g = _output_grad(q, v)
    ours, ref = _grad_kernel(g, q, k, v, m), _grad_reference(g, q, k, v, m)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    finite = ~np.isnan(ref)
    _close(ours[finite], ref[finite], np.float64, "rows with masked keys")


# the mask forms F.scaled_dot_product_attention takes: bool, float, broadcast shapes, causal
TRAINING_MASKS = [
    ("bool-padding", lambda rng: rng.random((2, 1, 1, 128)) < 0.8),
    ("float-per-query", lambda rng: rng.standard_normal((2, 12, 128, 128))),
    ("float-2d", lambda rng: rng.standard_normal((128, 128))),
    ("causal", None),
    ("none", lambda rng: None),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("form", TRAINING_MASKS, ids=lambda f: f[0])
def test_sdpa_training_gradients_match_torch(form, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((2, 12, 128, 32)).astype(dtype) for _ in range(3))
    g = rng.standard_normal(q.shape).astype(dtype)
    name, make = form
    mask = None if make is None else make(rng)
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)
    if mask is not None and mask.dtype == bool:
        mask[..., 0] = True  # every row keeps a key
    kwargs = {"is_causal": make is None}
    leaves = [ember.from_numpy(a).requires_grad_() for a in (q, k, v)]
    ours = N.scaled_dot_product_attention(
        *leaves, attn_mask=None if mask is None else ember.from_numpy(mask), **kwargs
    )
    grads = ember.autograd.grad((ours * ember.from_numpy(g)).sum(), leaves)
    tleaves = [torch.from_numpy(a).requires_grad_() for a in (q, k, v)]
    theirs = torch.nn.functional.scaled_dot_product_attention(
        *tleaves, attn_mask=None if mask is None else torch.from_numpy(mask), **kwargs
    )
    tgrads = torch.autograd.grad((theirs * torch.from_numpy(g)).sum(), tleaves)
    _close(ours.detach(), theirs.detach().numpy(), dtype, f"{name} forward")
    for i, (a, b) in enumerate(zip(grads, tgrads)):
        _close(a, b.numpy(), dtype, f"{name} gradient of input {i}")


def test_the_fused_backward_is_not_differentiated_again():
    q, k, v, m = (ember.from_numpy(a) for a in _arrays(CASES[0], np.float32))
    g = ember.ones(q.shape)
    with pytest.raises(NotImplementedError, match="fused_attention_grad"):
        Fz.ATTENTION_GRAD.vjp(g, None, g, None, q, k, v, m, scale=0.3, masked=True)
    # create_graph takes the decomposition's gradients, which are differentiable
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = Fz.fused_attention(*leaves, m, scale=0.3)
    (gq,) = ember.autograd.grad((out * out).sum(), [leaves[0]], create_graph=True)
    (gqq,) = ember.autograd.grad(gq.sum(), [leaves[0]])
    assert np.isfinite(gqq.numpy()).all()


def test_without_numba_the_backward_runs_its_reference():
    q, k, v, m = _arrays(CASES[0], np.float32, seed=12)
    g = _output_grad(q, v)
    with numba_kernels.disable_for_tests():
        assert AT.attention_grad(g, None, q, k, v, m, 0.3, 0, 0, 1.0) is None
        assert AT.attention_keep(q, k, v, m, 0.3, 0, 0, 1.0) is None
        leaves = [ember.from_numpy(a).requires_grad_() for a in (q, k, v)]
        out = Fz.fused_attention(*leaves, ember.from_numpy(m), scale=0.3)
        grads = ember.autograd.grad((out * ember.from_numpy(g)).sum(), leaves)
    ref = _grad_reference(g, q, k, v, m)
    ours = np.concatenate([np.asarray(x).transpose(0, 2, 1, 3).reshape(-1) for x in grads])
    _close(ours, ref, np.float32, "NumPy backward")


@needs_numba
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_training_forward_keeps_the_probabilities_for_its_backward(p):
    # Note [Kept probabilities]: the backward takes them (the same bits as recomputed), and
    # nothing stays behind once it has, or once the forward's result is freed
    q, k, v, m = _arrays(CASES[0], np.float32, seed=13)
    g = _output_grad(q, v)
    dropout = Fz._attention_dropout(np.dtype(np.float32), np.array(5), p)
    out = AT.attention_keep(q, k, v, m, 0.3, *dropout)
    _close(out, _reference(q, k, v, m, p, seed=5), np.float32, "training forward")
    assert len(AT._KEPT) == 1
    kept = AT.attention_grad(g, out, q, k, v, m, 0.3, *dropout)
    assert not AT._KEPT
    recomputed = AT.attention_grad(g, out, q, k, v, m, 0.3, *dropout)
    np.testing.assert_array_equal(kept, recomputed)
    del out
    leaves = [ember.from_numpy(a).requires_grad_() for a in (q, k, v)]
    result = Fz.fused_attention(*leaves, ember.from_numpy(m), scale=0.3, dropout_p=p)
    assert len(AT._KEPT) == 1
    ember.autograd.grad((result * ember.from_numpy(g)).sum(), leaves)
    assert not AT._KEPT
    unused = Fz.fused_attention(*leaves, ember.from_numpy(m), scale=0.3, dropout_p=p)
    assert len(AT._KEPT) == 1
    del unused
    assert not AT._KEPT


@needs_numba
def test_encoder_self_attention_in_training_equals_the_decomposition(monkeypatch):
    # BERT's self-attention (encoder_heads.self_attention: heads as views, dropout on the
    # probabilities) at a size that takes the kernels, against the decomposition
    from ember import nn
    from ember.transformers import encoder_heads

    rng = np.random.default_rng(14)
    ember.manual_seed(0)
    projections = [nn.Linear(64, 64) for _ in range(3)]
    hidden = rng.standard_normal((4, 128, 64)).astype(np.float32)
    mask = np.zeros((4, 1, 1, 128), np.float32)
    mask[1, ..., 90:] = np.finfo(np.float32).min
    dropout = nn.Dropout(0.1)
    cot = ember.from_numpy(rng.standard_normal((4, 128, 64)).astype(np.float32))

    def run():
        x = ember.from_numpy(hidden).requires_grad_()
        ember.manual_seed(21)
        context, _ = encoder_heads.self_attention(
            x, *projections, 2, ember.from_numpy(mask), dropout=dropout
        )
        params = [x] + [p for layer in projections for p in layer.parameters()]
        return [context.detach().numpy()] + [
            g.numpy() for g in ember.autograd.grad((context * cot).sum(), params)
        ]

    ours = run()
    assert not AT._KEPT
    monkeypatch.setattr(N, "_attention_fused", lambda *a: False)
    ref = run()
    for i, (a, b) in enumerate(zip(ours, ref)):
        _close(a, b, np.float32, f"output {i}")
