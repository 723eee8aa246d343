"""ember: a small, fast deep-learning framework.

Tensors with autograd (`ember.tensor`, `backward`), one op registry behind eager and compiled
execution, and PyTorch-, TensorFlow- and HuggingFace-flavoured faces over the same engine.
Heavy parts (nn, data pipelines, graph compiler, tokenizers, models) load on first use, so
`import ember` needs only NumPy.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import sys as _sys

# first, before anything loads NumPy: OpenBLAS's idle workers then spin ~30 us after a product
# instead of ~0.1 s (Note [BLAS spin] in ember/backend/threads.py)
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
else:  # NumPy came first: restart OpenBLAS's threads with that spin (Note [BLAS spin])
    from ember.backend.threads import shorten_blas_spin as _shorten_blas_spin

    _shorten_blas_spin()

__version__ = "0.1.0"

from ember import dtypes as dtypes
from ember.dtypes import (
    DType as DType,
    bool_ as bool,  # noqa: A001  (ember.bool, as torch.bool)
    uint8 as uint8,
    int8 as int8,
    int16 as int16,
    int32 as int32,
    int64 as int64,
    float16 as float16,
    bfloat16 as bfloat16,
    float32 as float32,
    float64 as float64,
    get_default_dtype as get_default_dtype,
    set_default_dtype as set_default_dtype,
    promote_types as promote_types,
)

half = float16
float = float32  # noqa: A001
double = float64
short = int16
int = int32  # noqa: A001
long = int64

from ember.backend.threads import (
    get_num_threads as get_num_threads,
    set_num_threads as set_num_threads,
)
from ember.backend.denormals import set_flush_denormal as set_flush_denormal
from ember.backend import (
    Device as Device,
    Generator as Generator,
    default_generator as default_generator,
    device as device,
    initial_seed as initial_seed,
    manual_seed as manual_seed,
    seed as seed,
)
from ember.tensor import (
    Size as Size,
    Tensor as Tensor,
    arange as arange,
    as_tensor as as_tensor,
    bernoulli as bernoulli,
    empty as empty,
    empty_like as empty_like,
    eye as eye,
    from_numpy as from_numpy,
    full as full,
    full_like as full_like,
    linspace as linspace,
    logspace as logspace,
    multinomial as multinomial,
    normal as normal,
    ones as ones,
    ones_like as ones_like,
    rand as rand,
    rand_like as rand_like,
    randint as randint,
    randint_like as randint_like,
    randn as randn,
    randn_like as randn_like,
    randperm as randperm,
    tensor as tensor,
    zeros as zeros,
    zeros_like as zeros_like,
)
from ember import autograd as autograd
from ember.autograd import (
    enable_grad as enable_grad,
    inference_mode as inference_mode,
    is_grad_enabled as is_grad_enabled,
    no_grad as no_grad,
    set_grad_enabled as set_grad_enabled,
)
from ember import ops as ops

# ember.exp, ember.sum, ember.cat, ...: every public op function, from the registry
# (Note [Op surface] in ember/ops/surface.py)
globals().update(ops.surface.functions())


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(t) -> int:
    return t.numel()


def is_floating_point(t) -> bool:
    return t.is_floating_point()


def allclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
    return a.allclose(b, rtol, atol, equal_nan)


def equal(a, b) -> bool:
    return a.equal(b)


def get_rng_state() -> dict:
    return default_generator("cpu").get_state()


def set_rng_state(state: dict) -> None:
    default_generator("cpu").set_state(state)


# Subpackages load on first use (Note: keeps `import ember` to NumPy only).
_LAZY = {
    "nn": "ember.nn",
    "optim": "ember.optim",
    "data": "ember.data",
    "utils": "ember.utils",
    "io": "ember.io",
    "serialization": "ember.serialization",
    "graph": "ember.graph",
    "vision": "ember.vision",
    "text": "ember.text",
    "transformers": "ember.transformers",
    "train": "ember.train",
    "onnx": "ember.onnx",
    "tf": "ember.tf",
    "testing": "ember.testing",
    "cuda": "ember.cuda",
    "accelerator": "ember.accelerator",
    "backend": "ember.backend",
    "image": "ember.vision.image",
    "linalg": "ember.linalg",  # issue 18 (ops18b)
}


# Functions that live in lazily loaded subpackages: name -> (module, attribute).
_LAZY_FUNCTIONS = {
    "save": ("ember.io.checkpoint", "save"),
    "load": ("ember.io.checkpoint", "load"),
    "compile": ("ember.graph", "compile"),
    "function": ("ember.graph", "function"),
    "cond": ("ember.graph.control", "cond"),
    "while_loop": ("ember.graph.control", "while_loop"),
    "config": ("ember.graph", "config"),
    "export": ("ember.io.export", "export"),
    "load_exported": ("ember.io.export", "load_exported"),
}


def __getattr__(name: str):
    target = _LAZY_FUNCTIONS.get(name)
    if target is not None:
        value = getattr(_importlib.import_module(target[0]), target[1])
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is not None:
        value = _importlib.import_module(module)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
