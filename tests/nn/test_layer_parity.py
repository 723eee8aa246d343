"""Layer-by-layer parity with PyTorch (STYLE.md habits 5 and 6): one table row per layer
configuration. For each row, the PyTorch layer's state dict is copied into the ember layer, both
get the same inputs, and outputs, input gradients and parameter gradients must agree to 1e-5
(float32) in train and eval mode. Dropout rows run with p=0 in train mode or in eval mode.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import ember
import ember.nn as nn

torch = pytest.importorskip("torch")

# single layers (depth <= 2): rtol, atol in the rtol-atol form of Note [Parity tolerances]
RTOL = 1e-5
ATOL = 1e-5


def f32(*shape, low=-1.0, high=1.0):
    return lambda rng: rng.uniform(low, high, shape).astype(np.float32)


def ints(high, *shape, low=0):
    return lambda rng: rng.integers(low, high, shape).astype(np.int64)


def probs(*shape):
    def make(rng):
        x = rng.uniform(0.05, 1.0, shape).astype(np.float32)
        return x / x.sum(axis=1, keepdims=True)

    return make


def const(array):
    return lambda rng: np.asarray(array)


# (id, class name, args, kwargs, input makers, modes). Inputs that are float get gradients.
ROWS = [
    ("linear", "Linear", (7, 5), {}, [f32(4, 7)], "both"),
    ("linear_3d_nobias", "Linear", (7, 5), {"bias": False}, [f32(2, 3, 7)], "both"),
    ("bilinear", "Bilinear", (3, 4, 5), {}, [f32(6, 3), f32(6, 4)], "both"),
    ("embedding", "Embedding", (10, 4), {}, [ints(10, 3, 5)], "both"),
    (
        "embedding_padding",
        "Embedding",
        (10, 4),
        {"padding_idx": 0},
        [const([[0, 1, 2], [3, 0, 9]])],
        "both",
    ),
    # max_norm renormalises the looked-up rows in place (repeated indices included): the
    # weights after the forward are compared too
    ("embedding_max_norm", "Embedding", (10, 4), {"max_norm": 1.5}, [ints(10, 3, 5)], "both"),
    (
        "embedding_max_norm_l1_padding",
        "Embedding",
        (10, 4),
        {"max_norm": 2.0, "norm_type": 1.0, "padding_idx": -1},
        [const([[9, 1, 1], [3, 9, 1]])],
        "both",
    ),
    (
        "embedding_max_norm_inf",
        "Embedding",
        (10, 4),
        {"max_norm": 0.8, "norm_type": float("inf")},
        [ints(10, 2, 6)],
        "both",
    ),
    (
        "embedding_scale_grad_by_freq",
        "Embedding",
        (10, 4),
        {"scale_grad_by_freq": True},
        [const([[0, 1, 1, 4], [1, 4, 7, 1]])],
        "both",
    ),
    (
        "embedding_scale_grad_padding_max_norm",
        "Embedding",
        (10, 4),
        {"scale_grad_by_freq": True, "padding_idx": 2, "max_norm": 1.0},
        [const([[2, 2, 5], [5, 8, 2]])],
        "both",
    ),
    ("conv1d", "Conv1d", (3, 4, 3), {"stride": 2, "padding": 1}, [f32(2, 3, 11)], "both"),
    ("conv2d", "Conv2d", (3, 4, 3), {"padding": 1}, [f32(2, 3, 8, 8)], "both"),
    (
        "conv2d_strided_groups",
        "Conv2d",
        (4, 6, (3, 2)),
        {"stride": (2, 1), "dilation": (1, 2), "groups": 2, "bias": False},
        [f32(2, 4, 9, 9)],
        "both",
    ),
    (
        "conv2d_same_reflect",
        "Conv2d",
        (2, 3, 3),
        {"padding": 1, "padding_mode": "reflect"},
        [f32(1, 2, 6, 6)],
        "both",
    ),
    ("maxpool2d", "MaxPool2d", (2,), {}, [f32(2, 3, 8, 8)], "both"),
    (
        "maxpool2d_stride_pad",
        "MaxPool2d",
        (3,),
        {"stride": 2, "padding": 1},
        [f32(2, 3, 9, 9)],
        "both",
    ),
    ("avgpool2d", "AvgPool2d", (2,), {}, [f32(2, 3, 8, 8)], "both"),
    (
        "maxpool2d_indices",
        "MaxPool2d",
        (3,),
        {"stride": 2, "padding": 1, "ceil_mode": True, "return_indices": True},
        [f32(2, 3, 8, 7)],
        "both",
    ),
    (
        "maxpool1d_indices",
        "MaxPool1d",
        (3,),
        {"stride": 2, "dilation": 2, "return_indices": True},
        [f32(2, 3, 11)],
        "both",
    ),
    (
        "maxpool3d",
        "MaxPool3d",
        ((2, 3, 2),),
        {"stride": 2, "padding": 1, "ceil_mode": True},
        [f32(2, 2, 5, 6, 5)],
        "both",
    ),
    (
        "maxpool3d_indices_unbatched",
        "MaxPool3d",
        (2,),
        {"return_indices": True},
        [f32(3, 4, 4, 5)],
        "both",
    ),
    (
        "avgpool2d_ceil",
        "AvgPool2d",
        (3,),
        {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
        [f32(2, 3, 8, 7)],
        "both",
    ),
    (
        "avgpool1d_ceil",
        "AvgPool1d",
        (3,),
        {"stride": 2, "padding": 1, "ceil_mode": True},
        [f32(2, 3, 10)],
        "both",
    ),
    (
        "avgpool2d_pad",
        "AvgPool2d",
        (3,),
        {"stride": 2, "padding": 1, "count_include_pad": False},
        [f32(2, 3, 9, 9)],
        "both",
    ),
    ("adaptive_avgpool2d", "AdaptiveAvgPool2d", ((1, 1),), {}, [f32(2, 3, 7, 7)], "both"),
    ("adaptive_avgpool2d_uneven", "AdaptiveAvgPool2d", ((3, 2),), {}, [f32(2, 3, 7, 5)], "both"),
    ("batchnorm1d", "BatchNorm1d", (5,), {}, [f32(8, 5)], "both"),
    ("batchnorm1d_3d", "BatchNorm1d", (5,), {"momentum": 0.3}, [f32(4, 5, 6)], "both"),
    ("batchnorm2d", "BatchNorm2d", (3,), {}, [f32(4, 3, 5, 5)], "both"),
    ("batchnorm2d_no_affine", "BatchNorm2d", (3,), {"affine": False}, [f32(4, 3, 5, 5)], "both"),
    ("batchnorm2d_cumulative", "BatchNorm2d", (3,), {"momentum": None}, [f32(4, 3, 5, 5)], "both"),
    (
        "batchnorm2d_untracked",
        "BatchNorm2d",
        (3,),
        {"track_running_stats": False},
        [f32(4, 3, 5, 5)],
        "both",
    ),
    ("layernorm", "LayerNorm", (6,), {}, [f32(3, 4, 6)], "both"),
    ("layernorm_2d", "LayerNorm", ((4, 6),), {"eps": 1e-3}, [f32(3, 4, 6)], "both"),
    ("layernorm_nobias", "LayerNorm", (6,), {"bias": False}, [f32(3, 6)], "both"),
    ("groupnorm", "GroupNorm", (2, 6), {}, [f32(3, 6, 4, 4)], "both"),
    (
        "conv3d",
        "Conv3d",
        (4, 6, (3, 2, 3)),
        {"stride": (2, 1, 1), "padding": 1, "groups": 2},
        [f32(2, 4, 5, 4, 5)],
        "both",
    ),
    (
        "conv_transpose1d",
        "ConvTranspose1d",
        (4, 3, 3),
        {"stride": 2, "output_padding": 1},
        [f32(2, 4, 6)],
        "both",
    ),
    (
        "conv_transpose2d",
        "ConvTranspose2d",
        (4, 6, (3, 2)),
        {"stride": 2, "padding": 1, "groups": 2, "dilation": (1, 2)},
        [f32(2, 4, 5, 6)],
        "both",
    ),
    (
        "conv_transpose2d_unbatched_nobias",
        "ConvTranspose2d",
        (3, 2, 3),
        {"bias": False},
        [f32(3, 4, 4)],
        "both",
    ),
    (
        "conv_transpose3d",
        "ConvTranspose3d",
        (2, 3, 3),
        {"stride": (2, 1, 2), "padding": (1, 0, 1), "output_padding": (1, 0, 0)},
        [f32(1, 2, 3, 4, 3)],
        "both",
    ),
    ("unfold", "Unfold", ((2, 3),), {"padding": 1, "stride": (2, 1)}, [f32(2, 3, 5, 6)], "both"),
    ("fold", "Fold", ((5, 6), (2, 3)), {"padding": 1, "stride": (2, 1)}, [f32(2, 18, 18)], "both"),
    ("upsample_nearest", "Upsample", (), {"scale_factor": 2}, [f32(1, 2, 3, 4)], "both"),
    ("upsample_bilinear", "Upsample", ((5, 7),), {"mode": "bilinear"}, [f32(1, 2, 3, 4)], "both"),
    (
        "upsample_bicubic_corners",
        "Upsample",
        (),
        {"scale_factor": 1.5, "mode": "bicubic", "align_corners": True},
        [f32(1, 2, 4, 4)],
        "both",
    ),
    (
        "upsample_trilinear",
        "Upsample",
        ((4, 3, 5),),
        {"mode": "trilinear"},
        [f32(1, 2, 2, 3, 4)],
        "both",
    ),
    (
        "upsampling_bilinear2d",
        "UpsamplingBilinear2d",
        (),
        {"scale_factor": 2},
        [f32(1, 2, 3, 4)],
        "both",
    ),
    ("dropout_p0", "Dropout", (0.0,), {}, [f32(4, 5)], "both"),
    ("dropout_eval", "Dropout", (0.5,), {}, [f32(4, 5)], "eval"),
    ("dropout1d_eval", "Dropout1d", (0.5,), {}, [f32(2, 3, 5)], "eval"),
    ("dropout2d_p0", "Dropout2d", (0.0,), {}, [f32(2, 3, 4, 5)], "both"),
    ("dropout3d_eval", "Dropout3d", (0.5,), {}, [f32(3, 2, 4, 5)], "eval"),
    ("hardsigmoid", "Hardsigmoid", (), {}, [f32(4, 5, low=-5, high=5)], "both"),
    ("hardswish", "Hardswish", (), {}, [f32(4, 5, low=-5, high=5)], "both"),
    ("hardtanh", "Hardtanh", (-0.5, 0.7), {}, [f32(4, 5)], "both"),
    ("relu6", "ReLU6", (), {}, [f32(4, 5, low=-2, high=8)], "both"),
    ("softsign", "Softsign", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("celu", "CELU", (0.7,), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("selu", "SELU", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("mish", "Mish", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("logsigmoid", "LogSigmoid", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("softmin", "Softmin", (1,), {}, [f32(4, 5)], "both"),
    ("flatten", "Flatten", (), {}, [f32(2, 3, 4)], "both"),
    ("identity", "Identity", (), {}, [f32(2, 3)], "both"),
    ("relu", "ReLU", (), {}, [f32(4, 5)], "both"),
    ("gelu", "GELU", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("gelu_tanh", "GELU", (), {"approximate": "tanh"}, [f32(4, 5, low=-3, high=3)], "both"),
    ("tanh", "Tanh", (), {}, [f32(4, 5)], "both"),
    ("sigmoid", "Sigmoid", (), {}, [f32(4, 5)], "both"),
    ("silu", "SiLU", (), {}, [f32(4, 5, low=-3, high=3)], "both"),
    ("softmax", "Softmax", (), {"dim": 1}, [f32(4, 5, low=-3, high=3)], "both"),
    ("logsoftmax", "LogSoftmax", (), {"dim": -1}, [f32(4, 5, low=-3, high=3)], "both"),
    ("leaky_relu", "LeakyReLU", (0.2,), {}, [f32(4, 5)], "both"),
    ("elu", "ELU", (), {"alpha": 0.5}, [f32(4, 5, low=-3, high=3)], "both"),
    ("cross_entropy", "CrossEntropyLoss", (), {}, [f32(6, 5), ints(5, 6)], "both"),
    (
        "cross_entropy_opts",
        "CrossEntropyLoss",
        (),
        {"ignore_index": 1, "label_smoothing": 0.1, "reduction": "sum"},
        [f32(6, 5), const([0, 1, 2, 3, 4, 1])],
        "both",
    ),
    (
        "cross_entropy_weight",
        "CrossEntropyLoss",
        (),
        {"weight": "W5"},
        [f32(6, 5), ints(5, 6)],
        "both",
    ),
    (
        "cross_entropy_weight_smooth",
        "CrossEntropyLoss",
        (),
        {"weight": "W5", "label_smoothing": 0.2},
        [f32(6, 5), ints(5, 6)],
        "both",
    ),
    (
        "cross_entropy_probs",
        "CrossEntropyLoss",
        (),
        {"label_smoothing": 0.05},
        [f32(6, 5), probs(6, 5)],
        "both",
    ),
    (
        "cross_entropy_spatial",
        "CrossEntropyLoss",
        (),
        {"reduction": "none"},
        [f32(2, 5, 3, 3), ints(5, 2, 3, 3)],
        "both",
    ),
    ("nll", "NLLLoss", (), {}, [f32(6, 5, low=-3, high=-0.1), ints(5, 6)], "both"),
    (
        "nll_weight",
        "NLLLoss",
        (),
        {"weight": "W5", "ignore_index": 2},
        [f32(6, 5, low=-3, high=-0.1), ints(5, 6)],
        "both",
    ),
    ("mse", "MSELoss", (), {}, [f32(4, 5), f32(4, 5)], "both"),
    ("mse_none", "MSELoss", (), {"reduction": "none"}, [f32(4, 5), f32(4, 5)], "both"),
    ("l1", "L1Loss", (), {"reduction": "sum"}, [f32(4, 5), f32(4, 5)], "both"),
    ("smooth_l1", "SmoothL1Loss", (), {"beta": 0.5}, [f32(4, 5), f32(4, 5)], "both"),
    ("bce", "BCELoss", (), {}, [f32(4, 5, low=0.05, high=0.95), f32(4, 5, low=0, high=1)], "both"),
    (
        "bce_logits",
        "BCEWithLogitsLoss",
        (),
        {},
        [f32(4, 5, low=-3, high=3), f32(4, 5, low=0, high=1)],
        "both",
    ),
    (
        "bce_logits_pos_weight",
        "BCEWithLogitsLoss",
        (),
        {"pos_weight": "W5"},
        [f32(4, 5, low=-3, high=3), f32(4, 5, low=0, high=1)],
        "both",
    ),
    (
        "kl_div",
        "KLDivLoss",
        (),
        {"reduction": "batchmean"},
        [f32(4, 5, low=-3, high=-0.1), probs(4, 5)],
        "both",
    ),
    (
        "kl_div_log_target",
        "KLDivLoss",
        (),
        {"reduction": "sum", "log_target": True},
        [f32(4, 5, low=-3, high=-0.1), f32(4, 5, low=-3, high=-0.1)],
        "both",
    ),
    ("mha", "MultiheadAttention", (8, 2), {}, [f32(5, 3, 8), f32(4, 3, 8), f32(4, 3, 8)], "both"),
    (
        "mha_batch_first_masks",
        "MultiheadAttention",
        (8, 4),
        {"batch_first": True},
        [f32(3, 5, 8), f32(3, 6, 8), f32(3, 6, 8)],
        "both",
        {
            "key_padding_mask": const(
                [[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]]
            ),
            "attn_mask": lambda rng: rng.uniform(-1, 1, (5, 6)).astype(np.float32),
        },
    ),
    (
        "mha_bool_attn_mask_per_head",
        "MultiheadAttention",
        (8, 2),
        {"batch_first": True},
        [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)],
        "both",
        {"attn_mask": const(np.triu(np.ones((4, 4), bool), 1)), "average_attn_weights": False},
    ),
    (
        "mha_kdim_vdim",
        "MultiheadAttention",
        (8, 2),
        {"kdim": 6, "vdim": 5},
        [f32(4, 2, 8), f32(3, 2, 6), f32(3, 2, 5)],
        "both",
    ),
    # add_bias_kv / add_zero_attn: one more source position each, masks padded as unmasked
    (
        "mha_bias_kv_masks",
        "MultiheadAttention",
        (8, 2),
        {"add_bias_kv": True},
        [f32(5, 3, 8), f32(4, 3, 8), f32(4, 3, 8)],
        "both",
        {
            "key_padding_mask": const([[False] * 4, [False] * 2 + [True] * 2, [True] * 4]),
            "attn_mask": lambda rng: rng.uniform(-1, 1, (5, 4)).astype(np.float32),
        },
    ),
    (
        "mha_zero_attn_batch_first_per_head",
        "MultiheadAttention",
        (8, 4),
        {"add_zero_attn": True, "batch_first": True},
        [f32(2, 4, 8), f32(2, 3, 8), f32(2, 3, 8)],
        "both",
        {
            "key_padding_mask": const([[False] * 3, [False, True, True]]),
            "attn_mask": const(np.triu(np.ones((4, 3), bool), 1)),
            "average_attn_weights": False,
        },
    ),
    (
        "mha_bias_kv_zero_attn_kdim_vdim",
        "MultiheadAttention",
        (8, 2),
        {"add_bias_kv": True, "add_zero_attn": True, "kdim": 6, "vdim": 5, "bias": False},
        [f32(4, 2, 8), f32(3, 2, 6), f32(3, 2, 5)],
        "both",
        {
            "attn_mask": lambda rng: rng.uniform(-1, 1, (4, 4, 3)).astype(np.float32),
            "key_padding_mask": const([[False, True, False], [False] * 3]),
        },
    ),
    (
        "mha_bias_kv_zero_attn_batch_first_average",
        "MultiheadAttention",
        (8, 2),
        {"add_bias_kv": True, "add_zero_attn": True, "batch_first": True},
        [f32(3, 5, 8), f32(3, 6, 8), f32(3, 6, 8)],
        "both",
        {"key_padding_mask": const([[False] * 6, [False] * 4 + [True] * 2, [True] * 6])},
    ),
    (
        "mha_bias_kv_unbatched",
        "MultiheadAttention",
        (8, 2),
        {"add_bias_kv": True, "add_zero_attn": True},
        [f32(5, 8), f32(4, 8), f32(4, 8)],
        "both",
        {"average_attn_weights": False},
    ),
    (
        "decoder_layer_causal",
        "TransformerDecoderLayer",
        (8, 2, 16),
        {"dropout": 0.0},
        [f32(5, 3, 8), f32(6, 3, 8)],
        "both",
        {"tgt_mask": const(np.triu(np.full((5, 5), -np.inf, dtype=np.float32), 1))},
    ),
    (
        "decoder_layer_norm_first_padding",
        "TransformerDecoderLayer",
        (8, 2, 16),
        {"dropout": 0.0, "norm_first": True, "batch_first": True, "activation": "gelu"},
        [f32(3, 5, 8), f32(3, 6, 8)],
        "both",
        {
            "memory_key_padding_mask": const(
                [[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]]
            ),
            "tgt_is_causal": True,
            "tgt_mask": const(np.triu(np.full((5, 5), -np.inf, dtype=np.float32), 1)),
        },
    ),
    (
        "encoder_layer",
        "TransformerEncoderLayer",
        (8, 2, 16),
        {"dropout": 0.0},
        [f32(5, 3, 8)],
        "train",
    ),
    (
        "encoder_layer_norm_first_gelu",
        "TransformerEncoderLayer",
        (8, 2, 16),
        {"dropout": 0.0, "norm_first": True, "activation": "gelu", "batch_first": True},
        [f32(3, 5, 8)],
        "train",
        {
            "src_key_padding_mask": const(
                [[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]]
            )
        },
    ),
]


def _kwargs(kwargs, lib, rng):
    out = {}
    for k, v in kwargs.items():
        if v == "W5":
            w = rng.uniform(0.5, 2.0, 5).astype(np.float32)
            v = ember.tensor(w) if lib is ember else torch.tensor(w)
        out[k] = v
    return out


def _to(lib, array, grad):
    if lib is ember:
        t = ember.tensor(array)
    else:
        t = torch.tensor(array)
    if grad and array.dtype == np.float32:
        t.requires_grad_(True)
    return t


def _as_numpy(t):
    if isinstance(t, ember.Tensor):
        return np.asarray(t.detach())
    return t.detach().numpy()


def _outputs(out):
    if isinstance(out, (tuple, list)):
        return [o for o in out if o is not None]
    return [out]


def _load_torch_weights(ember_module, torch_module):
    state = {k: ember.tensor(v.detach().numpy()) for k, v in torch_module.state_dict().items()}
    ember_module.load_state_dict(state)


def _run(lib, module, inputs, call_kwargs, mode, upstream):
    module.train(mode == "train")
    xs = [_to(lib, a, True) for a in inputs]
    kw = {
        k: (_to(lib, v, False) if isinstance(v, np.ndarray) else v) for k, v in call_kwargs.items()
    }
    out = _outputs(module(*xs, **kw))
    total = None
    for o, u in zip(out, upstream):
        term = (o * _to(lib, u, False)).sum()
        total = term if total is None else total + term
    total.backward()
    grads = [x.grad for x in xs if x.requires_grad]
    params = {name: p.grad for name, p in module.named_parameters()}
    return out, grads, params


def _modes(spec):
    return ["train", "eval"] if spec == "both" else [spec]


CASES = [pytest.param(row, mode, id=f"{row[0]}-{mode}") for row in ROWS for mode in _modes(row[5])]


@pytest.mark.parametrize("row,mode", CASES)
def test_layer_matches_pytorch(row, mode):
    name, cls, args, kwargs, makers, _ = row[:6]
    call_makers = row[6] if len(row) > 6 else {}
    seed = abs(hash(name)) % 2**31
    torch.manual_seed(0)
    torch_module = getattr(torch.nn, cls)(
        *args, **_kwargs(kwargs, torch, np.random.default_rng(seed))
    )
    ember_module = getattr(nn, cls)(*args, **_kwargs(kwargs, ember, np.random.default_rng(seed)))
    _load_torch_weights(ember_module, torch_module)

    rng = np.random.default_rng(seed + 1)
    inputs = [m(rng) for m in makers]
    call_kwargs = {k: m(rng) if callable(m) else m for k, m in call_makers.items()}
    with torch.no_grad():  # a copy, so that BatchNorm's running statistics stay untouched
        probe = _outputs(
            copy.deepcopy(torch_module).train(mode == "train")(
                *[torch.tensor(a) for a in inputs],
                **{
                    k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                    for k, v in call_kwargs.items()
                },
            )
        )
    upstream = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in probe]

    t_out, t_grads, t_params = _run(torch, torch_module, inputs, call_kwargs, mode, upstream)
    e_out, e_grads, e_params = _run(ember, ember_module, inputs, call_kwargs, mode, upstream)

    worst = {}

    def close(e, t, what):
        e, t = np.asarray(e), np.asarray(t)
        if e.size:
            worst[what.split(" ")[0]] = max(
                worst.get(what.split(" ")[0], 0.0), float(np.max(np.abs(e.astype(np.float64) - t)))
            )
        np.testing.assert_allclose(e, t, rtol=RTOL, atol=ATOL, err_msg=f"{name} {mode}: {what}")

    assert len(e_out) == len(t_out)
    for i, (e, t) in enumerate(zip(e_out, t_out)):
        assert tuple(e.shape) == tuple(t.shape)
        close(_as_numpy(e), _as_numpy(t), f"output {i}")
    for i, (e, t) in enumerate(zip(e_grads, t_grads)):
        close(_as_numpy(e), _as_numpy(t), f"input_grad {i}")
    assert set(e_params) == set(t_params)
    for key, t in t_params.items():
        e = e_params[key]
        if t is None:
            assert e is None or not np.any(_as_numpy(e)), key
            continue
        close(_as_numpy(e), _as_numpy(t), f"param_grad of {key}")
    # parameter values after the step (Embedding's max_norm rescales rows in place)
    t_values = dict(torch_module.named_parameters())
    for key, p in ember_module.named_parameters():
        close(_as_numpy(p), t_values[key].detach().numpy(), f"param_value of {key}")
    # buffers (BatchNorm running statistics) after the step
    t_buffers = dict(torch_module.named_buffers())
    for key, b in ember_module.named_buffers():
        close(_as_numpy(b), t_buffers[key].numpy(), f"buffer {key}")
    print(f"{name} {mode}: max abs error " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))


def test_every_listed_layer_has_a_row():
    listed = {
        "Linear",
        "Bilinear",
        "Embedding",
        "Conv1d",
        "Conv2d",
        "MaxPool2d",
        "AvgPool2d",
        "AdaptiveAvgPool2d",
        "BatchNorm1d",
        "BatchNorm2d",
        "LayerNorm",
        "GroupNorm",
        "Dropout",
        "Flatten",
        "Identity",
        "ReLU",
        "GELU",
        "Tanh",
        "Sigmoid",
        "SiLU",
        "Softmax",
        "LogSoftmax",
        "LeakyReLU",
        "ELU",
        "MultiheadAttention",
        "TransformerEncoderLayer",
        "TransformerDecoderLayer",
        "CrossEntropyLoss",
        "NLLLoss",
        "MSELoss",
        "L1Loss",
        "SmoothL1Loss",
        "BCELoss",
        "BCEWithLogitsLoss",
        "KLDivLoss",
    }
    assert listed <= {row[1] for row in ROWS}


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_matches_pytorch(norm_first):
    torch.manual_seed(0)
    t_layer = torch.nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    t_enc = torch.nn.TransformerEncoder(
        t_layer, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False
    )
    e_layer = nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    e_enc = nn.TransformerEncoder(e_layer, 2, norm=nn.LayerNorm(8))
    _load_torch_weights(e_enc, t_enc)
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    mask = np.array([[False] * 5, [False] * 3 + [True] * 2])
    for mode in (True, False):
        t_enc.train(mode)
        e_enc.train(mode)
        tx = torch.tensor(x, requires_grad=True)
        ex = ember.tensor(x, requires_grad=True)
        t_out = t_enc(tx, src_key_padding_mask=torch.tensor(mask))
        e_out = e_enc(ex, src_key_padding_mask=ember.tensor(mask))
        np.testing.assert_allclose(_as_numpy(e_out), _as_numpy(t_out), rtol=RTOL, atol=ATOL)
        t_out.sum().backward()
        e_out.sum().backward()
        np.testing.assert_allclose(_as_numpy(ex.grad), tx.grad.numpy(), rtol=RTOL, atol=ATOL)
        t_params = dict(t_enc.named_parameters())
        for key, p in e_enc.named_parameters():
            np.testing.assert_allclose(
                _as_numpy(p.grad), t_params[key].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=key
            )
        t_enc.zero_grad()
        e_enc.zero_grad()


@pytest.mark.parametrize("batch_first", [False, True])
def test_full_transformer_matches_pytorch(batch_first):
    torch.manual_seed(0)
    kwargs = dict(
        d_model=8,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=16,
        dropout=0.0,
        batch_first=batch_first,
    )
    t_model = torch.nn.Transformer(**kwargs)
    e_model = nn.Transformer(**kwargs)
    assert list(e_model.state_dict()) == list(t_model.state_dict())
    _load_torch_weights(e_model, t_model)
    rng = np.random.default_rng(1)
    src = rng.standard_normal((2, 6, 8) if batch_first else (6, 2, 8)).astype(np.float32)
    tgt = rng.standard_normal((2, 4, 8) if batch_first else (4, 2, 8)).astype(np.float32)
    t_mask = torch.nn.Transformer.generate_square_subsequent_mask(4)
    e_mask = nn.Transformer.generate_square_subsequent_mask(4)
    np.testing.assert_array_equal(_as_numpy(e_mask), t_mask.numpy())
    pad = np.array([[False] * 6, [False] * 4 + [True] * 2])
    t_src, e_src = torch.tensor(src, requires_grad=True), ember.tensor(src, requires_grad=True)
    t_out = t_model(
        t_src,
        torch.tensor(tgt),
        tgt_mask=t_mask,
        src_key_padding_mask=torch.tensor(pad),
        memory_key_padding_mask=torch.tensor(pad),
    )
    e_out = e_model(
        e_src,
        ember.tensor(tgt),
        tgt_mask=e_mask,
        src_key_padding_mask=ember.tensor(pad),
        memory_key_padding_mask=ember.tensor(pad),
    )
    np.testing.assert_allclose(_as_numpy(e_out), _as_numpy(t_out), rtol=RTOL, atol=ATOL)
    t_out.pow(2).sum().backward()
    e_out.pow(2).sum().backward()
    np.testing.assert_allclose(_as_numpy(e_src.grad), t_src.grad.numpy(), rtol=RTOL, atol=ATOL)
    t_params = dict(t_model.named_parameters())
    for key, p in e_model.named_parameters():
        np.testing.assert_allclose(
            _as_numpy(p.grad), t_params[key].grad.numpy(), rtol=RTOL, atol=1e-4, err_msg=key
        )
    with pytest.raises(ValueError, match="batch number of src and tgt"):
        e_model(ember.tensor(src), ember.tensor(tgt[:1] if batch_first else tgt[:, :1]))


@pytest.mark.parametrize("name", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
@pytest.mark.parametrize("bias", [True, False])
def test_transformer_layer_state_dict_moves_both_ways(name, bias):
    """Note [Transformer layer blocks]: PyTorch's submodule names, in its order, and a state
    dict that loads strictly in either direction."""
    torch.manual_seed(0)
    t_layer = getattr(torch.nn, name)(8, 2, 16, bias=bias)
    e_layer = getattr(nn, name)(8, 2, 16, bias=bias)
    assert [n for n, _ in e_layer.named_modules()] == [n for n, _ in t_layer.named_modules()]
    assert list(e_layer.state_dict()) == list(t_layer.state_dict())
    e_state = {k: torch.tensor(_as_numpy(v)) for k, v in e_layer.state_dict().items()}
    t_layer.load_state_dict(e_state, strict=True)
    for key, value in t_layer.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), _as_numpy(e_layer.state_dict()[key]))
    t_fresh = getattr(torch.nn, name)(8, 2, 16, bias=bias)
    _load_torch_weights(e_layer, t_fresh)
    for key, value in t_fresh.state_dict().items():
        np.testing.assert_array_equal(_as_numpy(e_layer.state_dict()[key]), value.numpy())
