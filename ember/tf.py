"""`import ember.tf as tf`: the TensorFlow-flavoured face of ember (names only).

TF1 graphs (`placeholder`, `Variable`, `Session`, `train.*Optimizer`) map onto
`ember.graph.tf1`, which replays them through ember's compiler; `tf.function` is
`ember.compile`; `tf.data` is ember's data pipeline (loaded on first use).

Example:
    >>> import ember.tf as tf
    >>> x = tf.placeholder(tf.float32)
    >>> y = tf.reduce_sum(x * 2.0)
    >>> with tf.Session() as sess:
    ...     sess.run(y, {x: [1.0, 2.0]})
    6.0
"""

from __future__ import annotations

import importlib as _importlib

from ember.dtypes import (
    float16 as float16,
)
from ember.dtypes import (
    float32 as float32,
)
from ember.dtypes import (
    float64 as float64,
)
from ember.dtypes import (
    int8 as int8,
)
from ember.dtypes import (
    int16 as int16,
)
from ember.dtypes import (
    int32 as int32,
)
from ember.dtypes import (
    int64 as int64,
)
from ember.dtypes import (
    uint8 as uint8,
)
from ember.graph.tf1 import (
    Graph as Graph,
)
from ember.graph.tf1 import (
    Operation as Operation,
)
from ember.graph.tf1 import (
    Session as Session,
)
from ember.graph.tf1 import (
    Tensor as Tensor,
)
from ember.graph.tf1 import (
    TensorShape as TensorShape,
)
from ember.graph.tf1 import (
    Variable as Variable,
)
from ember.graph.tf1 import (
    abs as abs,  # noqa: A004
)
from ember.graph.tf1 import (
    add as add,
)
from ember.graph.tf1 import (
    argmax as argmax,
)
from ember.graph.tf1 import (
    cast as cast,
)
from ember.graph.tf1 import (
    constant as constant,
)
from ember.graph.tf1 import (
    divide as divide,
)
from ember.graph.tf1 import (
    equal as equal,
)
from ember.graph.tf1 import (
    errors as errors,
)
from ember.graph.tf1 import (
    exp as exp,
)
from ember.graph.tf1 import (
    get_default_graph as get_default_graph,
)
from ember.graph.tf1 import (
    global_variables as global_variables,
)
from ember.graph.tf1 import (
    global_variables_initializer as global_variables_initializer,
)
from ember.graph.tf1 import (
    gradients as gradients,
)
from ember.graph.tf1 import (
    group as group,
)
from ember.graph.tf1 import (
    log as log,
)
from ember.graph.tf1 import (
    matmul as matmul,
)
from ember.graph.tf1 import (
    maximum as maximum,
)
from ember.graph.tf1 import (
    minimum as minimum,
)
from ember.graph.tf1 import (
    multiply as multiply,
)
from ember.graph.tf1 import (
    negative as negative,
)
from ember.graph.tf1 import (
    nn as nn,
)
from ember.graph.tf1 import (
    ones as ones,
)
from ember.graph.tf1 import (
    placeholder as placeholder,
)
from ember.graph.tf1 import (
    random as random,
)
from ember.graph.tf1 import (
    random_normal as random_normal,
)
from ember.graph.tf1 import (
    random_uniform as random_uniform,
)
from ember.graph.tf1 import (
    reduce_max as reduce_max,
)
from ember.graph.tf1 import (
    reduce_mean as reduce_mean,
)
from ember.graph.tf1 import (
    reduce_sum as reduce_sum,
)
from ember.graph.tf1 import (
    reset_default_graph as reset_default_graph,
)
from ember.graph.tf1 import (
    reshape as reshape,
)
from ember.graph.tf1 import (
    sigmoid as sigmoid,
)
from ember.graph.tf1 import (
    sqrt as sqrt,
)
from ember.graph.tf1 import (
    square as square,
)
from ember.graph.tf1 import (
    subtract as subtract,
)
from ember.graph.tf1 import (
    tanh as tanh,
)
from ember.graph.tf1 import (
    train as train,
)
from ember.graph.tf1 import (
    trainable_variables as trainable_variables,
)
from ember.graph.tf1 import (
    truncated_normal as truncated_normal,
)
from ember.graph.tf1 import (
    variables_initializer as variables_initializer,
)
from ember.graph.tf1 import (
    zeros as zeros,
)

double = float64
half = float16
DType = type(float32)

# tf.data and tf.io come from ember's data and io layers, loaded when first used.
_LAZY = {"data": "ember.data", "io": "ember.io", "image": "ember.vision"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is not None:
        try:
            value = _importlib.import_module(module)
        except ImportError as error:
            raise AttributeError(f"ember.tf.{name} needs {module}, which is not available: "
                                 f"{error}") from error
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.tf' has no attribute {name!r}")
