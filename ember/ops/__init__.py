"""L2: the op registry (`REGISTRY`), every primitive, and the composites built from them.

Importing this package registers every op. The functions here take Tensors and Python
scalars and return Tensors, through the dispatcher that L3 installs (Note [Eager dispatch]).
"""

from ember.ops.registry import (
    REGISTRY as REGISTRY,
    OpDef as OpDef,
    defop as defop,
    public as public,
)
from ember.ops import elementwise as elementwise
from ember.ops import reduce as reduce
from ember.ops import shape as shape
from ember.ops import linalg as linalg
from ember.ops import conv as conv
from ember.ops import random as random
from ember.ops import fused as fused
from ember.ops import nn as nn
from ember.ops import rnn as rnn
from ember.ops import spatial as spatial  # issue 18: lp_pool, pixel_shuffle, instance_norm
from ember.ops import distance as distance  # issue 18: cosine_similarity, pdist, cdist
from ember.ops import linalg_ext as linalg_ext  # issue 18: torch.linalg and matrix products
from ember.ops import dropout_norm as dropout_norm  # issue 21: dropout + residual + layer norm
from ember.ops import feed_forward as feed_forward  # issue 21: row-blocked BERT feed-forward

elementwise._LATE.SUM = reduce.SUM
elementwise._LATE.RESHAPE = shape.RESHAPE
elementwise._LATE.EXPAND = shape.EXPAND

from ember.ops import surface as surface  # noqa: E402  (after every op module: Note [Op surface])

surface.install()
for _name, _fn in surface.functions().items():  # ember.ops.exp, ember.ops.sum, ...
    if _name not in globals():
        globals()[_name] = _fn
del _name, _fn
