"""L5 `ember.nn`: Module, Parameter, containers, layers, activations, losses, attention and the
Transformer encoder, plus `ember.nn.functional`, `ember.nn.init` and `ember.nn.utils`.

Modules hold parameters and call functions from `ember.nn.functional`, which re-exports the
ops of `ember.ops`: the nn layer holds no math of its own (DESIGN.md, layer L5).
"""

from ember.nn import functional as functional
from ember.nn import init as init
from ember.nn import utils as utils
from ember.nn.modules.activation import (
    ELU as ELU,
    GELU as GELU,
    LeakyReLU as LeakyReLU,
    LogSoftmax as LogSoftmax,
    ReLU as ReLU,
    Sigmoid as Sigmoid,
    SiLU as SiLU,
    Softmax as Softmax,
    Softplus as Softplus,
    Tanh as Tanh,
)
from ember.nn.modules.container import (
    ModuleDict as ModuleDict,
    ModuleList as ModuleList,
    Sequential as Sequential,
)
from ember.nn.modules.layers import (
    AdaptiveAvgPool2d as AdaptiveAvgPool2d,
    AdaptiveMaxPool2d as AdaptiveMaxPool2d,
    AvgPool2d as AvgPool2d,
    BatchNorm1d as BatchNorm1d,
    BatchNorm2d as BatchNorm2d,
    Bilinear as Bilinear,
    Conv1d as Conv1d,
    Conv2d as Conv2d,
    Dropout as Dropout,
    Embedding as Embedding,
    Flatten as Flatten,
    GroupNorm as GroupNorm,
    Identity as Identity,
    LayerNorm as LayerNorm,
    Linear as Linear,
    MaxPool2d as MaxPool2d,
    Unflatten as Unflatten,
)
from ember.nn.modules.loss import (
    BCELoss as BCELoss,
    BCEWithLogitsLoss as BCEWithLogitsLoss,
    CrossEntropyLoss as CrossEntropyLoss,
    KLDivLoss as KLDivLoss,
    L1Loss as L1Loss,
    MSELoss as MSELoss,
    NLLLoss as NLLLoss,
    SmoothL1Loss as SmoothL1Loss,
)
from ember.nn.modules.module import Module as Module
from ember.nn.modules.transformer import (
    MultiheadAttention as MultiheadAttention,
    TransformerEncoder as TransformerEncoder,
    TransformerEncoderLayer as TransformerEncoderLayer,
)
from ember.nn.parameter import Buffer as Buffer, Parameter as Parameter
