"""L5 `ember.nn`: Module, Parameter, containers, layers, activations, losses, attention and the
Transformer encoder, plus `ember.nn.functional`, `ember.nn.init` and `ember.nn.utils`.

Modules hold parameters and call functions from `ember.nn.functional`, which re-exports the
ops of `ember.ops`: the nn layer holds no math of its own (DESIGN.md, layer L5).
"""

from ember.nn import functional as functional
from ember.nn import init as init
from ember.nn import parallel as parallel
from ember.nn import utils as utils
from ember.nn.modules.activation import (
    ELU as ELU,
)
from ember.nn.modules.activation import CELU as CELU
from ember.nn.modules.activation import SELU as SELU
from ember.nn.modules.activation import Hardsigmoid as Hardsigmoid
from ember.nn.modules.activation import Hardswish as Hardswish
from ember.nn.modules.activation import Hardtanh as Hardtanh
from ember.nn.modules.activation import LogSigmoid as LogSigmoid
from ember.nn.modules.activation import Mish as Mish
from ember.nn.modules.activation import ReLU6 as ReLU6
from ember.nn.modules.activation import Softmin as Softmin
from ember.nn.modules.activation import Softsign as Softsign
from ember.nn.modules.activation import (
    GELU as GELU,
)
from ember.nn.modules.activation import (
    LeakyReLU as LeakyReLU,
)
from ember.nn.modules.activation import (
    LogSoftmax as LogSoftmax,
)
from ember.nn.modules.activation import (
    ReLU as ReLU,
)
from ember.nn.modules.activation import (
    Sigmoid as Sigmoid,
)
from ember.nn.modules.activation import (
    SiLU as SiLU,
)
from ember.nn.modules.activation import (
    Softmax as Softmax,
)
from ember.nn.modules.activation import (
    Softplus as Softplus,
)
from ember.nn.modules.activation import (
    Tanh as Tanh,
)
from ember.nn.modules.container import (
    ModuleDict as ModuleDict,
)
from ember.nn.modules.container import (
    ModuleList as ModuleList,
)
from ember.nn.modules.container import (
    Sequential as Sequential,
)
from ember.nn.modules.layers import (
    AdaptiveAvgPool1d as AdaptiveAvgPool1d,
)
from ember.nn.modules.layers import (
    AdaptiveAvgPool2d as AdaptiveAvgPool2d,
)
from ember.nn.modules.layers import (
    AdaptiveAvgPool3d as AdaptiveAvgPool3d,
)
from ember.nn.modules.layers import (
    AdaptiveMaxPool1d as AdaptiveMaxPool1d,
)
from ember.nn.modules.layers import (
    AdaptiveMaxPool2d as AdaptiveMaxPool2d,
)
from ember.nn.modules.layers import (
    AdaptiveMaxPool3d as AdaptiveMaxPool3d,
)
from ember.nn.modules.layers import (
    AvgPool1d as AvgPool1d,
)
from ember.nn.modules.layers import (
    AvgPool2d as AvgPool2d,
)
from ember.nn.modules.layers import (
    AvgPool3d as AvgPool3d,
)
from ember.nn.modules.layers import (
    BatchNorm1d as BatchNorm1d,
)
from ember.nn.modules.layers import (
    BatchNorm2d as BatchNorm2d,
)
from ember.nn.modules.layers import (
    Bilinear as Bilinear,
)
from ember.nn.modules.layers import (
    Conv1d as Conv1d,
)
from ember.nn.modules.layers import (
    Conv2d as Conv2d,
)
from ember.nn.modules.layers import Conv3d as Conv3d
from ember.nn.modules.layers import ConvTranspose1d as ConvTranspose1d
from ember.nn.modules.layers import ConvTranspose2d as ConvTranspose2d
from ember.nn.modules.layers import ConvTranspose3d as ConvTranspose3d
from ember.nn.modules.layers import Fold as Fold
from ember.nn.modules.layers import Unfold as Unfold
from ember.nn.modules.layers import Upsample as Upsample
from ember.nn.modules.layers import UpsamplingBilinear2d as UpsamplingBilinear2d
from ember.nn.modules.layers import UpsamplingNearest2d as UpsamplingNearest2d
from ember.nn.modules.layers import (
    Dropout as Dropout,
)
from ember.nn.modules.layers import Dropout1d as Dropout1d
from ember.nn.modules.layers import Dropout2d as Dropout2d
from ember.nn.modules.layers import Dropout3d as Dropout3d
from ember.nn.modules.layers import (
    Embedding as Embedding,
)
from ember.nn.modules.layers import (
    Flatten as Flatten,
)
from ember.nn.modules.layers import (
    GroupNorm as GroupNorm,
)
from ember.nn.modules.layers import (
    Identity as Identity,
)
from ember.nn.modules.layers import (
    LayerNorm as LayerNorm,
)
from ember.nn.modules.layers import (
    Linear as Linear,
)
from ember.nn.modules.layers import (
    MaxPool1d as MaxPool1d,
)
from ember.nn.modules.layers import (
    MaxPool2d as MaxPool2d,
)
from ember.nn.modules.layers import (
    MaxPool3d as MaxPool3d,
)
from ember.nn.modules.layers import (
    MaxUnpool1d as MaxUnpool1d,
)
from ember.nn.modules.layers import (
    MaxUnpool2d as MaxUnpool2d,
)
from ember.nn.modules.layers import (
    MaxUnpool3d as MaxUnpool3d,
)
from ember.nn.modules.layers import (
    Unflatten as Unflatten,
)
from ember.nn.modules.loss import (
    BCELoss as BCELoss,
)
from ember.nn.modules.loss import (
    BCEWithLogitsLoss as BCEWithLogitsLoss,
)
from ember.nn.modules.loss import (
    CrossEntropyLoss as CrossEntropyLoss,
)
from ember.nn.modules.loss import (
    KLDivLoss as KLDivLoss,
)
from ember.nn.modules.loss import (
    L1Loss as L1Loss,
)
from ember.nn.modules.loss import (
    MSELoss as MSELoss,
)
from ember.nn.modules.loss import (
    NLLLoss as NLLLoss,
)
from ember.nn.modules.loss import (
    SmoothL1Loss as SmoothL1Loss,
)
from ember.nn.modules.module import Module as Module
from ember.nn.modules.distance import CosineSimilarity as CosineSimilarity  # issue 18 (ops18b)
from ember.nn.modules.distance import PairwiseDistance as PairwiseDistance
from ember.nn.modules.instancenorm import InstanceNorm1d as InstanceNorm1d
from ember.nn.modules.instancenorm import InstanceNorm2d as InstanceNorm2d
from ember.nn.modules.instancenorm import InstanceNorm3d as InstanceNorm3d
from ember.nn.modules.normalization import LocalResponseNorm as LocalResponseNorm
from ember.nn.modules.pixelshuffle import PixelShuffle as PixelShuffle
from ember.nn.modules.pixelshuffle import PixelUnshuffle as PixelUnshuffle
from ember.nn.modules.pooling import LPPool1d as LPPool1d
from ember.nn.modules.pooling import LPPool2d as LPPool2d
from ember.nn.modules.pooling import LPPool3d as LPPool3d
from ember.nn.modules.rnn import GRU as GRU
from ember.nn.modules.rnn import LSTM as LSTM
from ember.nn.modules.rnn import RNN as RNN
from ember.nn.modules.rnn import GRUCell as GRUCell
from ember.nn.modules.rnn import LSTMCell as LSTMCell
from ember.nn.modules.rnn import RNNBase as RNNBase
from ember.nn.modules.rnn import RNNCell as RNNCell
from ember.nn.modules.rnn import RNNCellBase as RNNCellBase
from ember.nn.modules.transformer import (
    MultiheadAttention as MultiheadAttention,
)
from ember.nn.modules.transformer import Transformer as Transformer
from ember.nn.modules.transformer import TransformerDecoder as TransformerDecoder
from ember.nn.modules.transformer import (
    TransformerDecoderLayer as TransformerDecoderLayer,
)
from ember.nn.modules.transformer import (
    TransformerEncoder as TransformerEncoder,
)
from ember.nn.modules.transformer import (
    TransformerEncoderLayer as TransformerEncoderLayer,
)
from ember.nn.parameter import Buffer as Buffer
from ember.nn.parameter import Parameter as Parameter
