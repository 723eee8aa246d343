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
    bool_ as bool,  # noqa: A001, F401  (tf.bool)
    float16 as float16,
    bfloat16 as bfloat16,
    float32 as float32,
    float64 as float64,
    int8 as int8,
    int16 as int16,
    int32 as int32,
    int64 as int64,
    uint8 as uint8,
)
from ember.graph.compile import compile as function  # noqa: F401  (tf.function)
from ember.graph.tf1 import (
    Graph as Graph,
    Operation as Operation,
    Session as Session,
    Tensor as Tensor,
    TensorShape as TensorShape,
    Variable as Variable,
    abs as abs,  # noqa: A004
    add as add,
    argmax as argmax,
    cast as cast,
    constant as constant,
    divide as divide,
    equal as equal,
    errors as errors,
    exp as exp,
    get_default_graph as get_default_graph,
    global_variables as global_variables,
    global_variables_initializer as global_variables_initializer,
    gradients as gradients,
    group as group,
    log as log,
    matmul as matmul,
    maximum as maximum,
    minimum as minimum,
    multiply as multiply,
    negative as negative,
    nn as nn,
    ones as ones,
    placeholder as placeholder,
    random as random,
    random_normal as random_normal,
    random_uniform as random_uniform,
    reduce_max as reduce_max,
    reduce_mean as reduce_mean,
    reduce_sum as reduce_sum,
    reset_default_graph as reset_default_graph,
    reshape as reshape,
    sigmoid as sigmoid,
    sqrt as sqrt,
    square as square,
    subtract as subtract,
    tanh as tanh,
    train as train,
    trainable_variables as trainable_variables,
    truncated_normal as truncated_normal,
    variables_initializer as variables_initializer,
    zeros as zeros,
)

double = float64
half = float16
DType = type(float32)


# tf.data, tf.io and tf.image come from ember's data, io and vision layers, loaded when first
# used. tf.data holds TensorFlow's names for ember's chained Pipeline.
def _tf_data():
    import types

    from ember.data import pipeline as _pipeline

    experimental = types.SimpleNamespace(AUTOTUNE=_pipeline.AUTOTUNE)
    return types.SimpleNamespace(
        Dataset=_pipeline.Pipeline,
        AUTOTUNE=_pipeline.AUTOTUNE,
        INFINITE_CARDINALITY=_pipeline.INFINITE_CARDINALITY,
        UNKNOWN_CARDINALITY=_pipeline.UNKNOWN_CARDINALITY,
        experimental=experimental,
    )


_LAZY = {"io": "ember.io", "image": "ember.vision.image"}


def __getattr__(name: str):
    if name == "data":
        value = _tf_data()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is not None:
        try:
            value = _importlib.import_module(module)
        except ImportError as error:
            raise AttributeError(
                f"ember.tf.{name} needs {module}, which is not available: {error}"
            ) from error
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.tf' has no attribute {name!r}")
