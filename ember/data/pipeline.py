"""The chained input pipeline in the tf.data style: `Pipeline` (`tf.data.Dataset` in `ember.tf`).

    files = Pipeline.list_files("photos/*.jpg")
    images = files.map(load, num_parallel_calls=AUTOTUNE).batch(32).prefetch(AUTOTUNE)

A Pipeline is a recipe: every method returns a new Pipeline, and each `iter()` runs the recipe
afresh (re-reading files, reshuffling). It is also an `IterableDataset`, so a DataLoader can
consume it, and `Pipeline.from_iterable(loader)` wraps any re-iterable, a DataLoader included.

Note [Pipeline elements]: inside the pipeline, elements are structures (tuples, dicts) of
NumPy arrays and scalars, Python str/bytes, or ember Tensors where a map function returns
them; map and filter functions see exactly what the previous stage produced, and a tuple
element is passed as positional arguments (as in tf.data). Iterating a Pipeline hands out
ember Tensors for numeric leaves (wrapped without a copy); `as_numpy_iterator()` hands out
NumPy arrays, with str turned into bytes as tf.data does.

Note [Parallel map]: `map(fn, num_parallel_calls=n)` keeps up to `2 n` calls in flight on a
pool of n threads (the default: right for functions that spend their time in code that
releases the GIL, such as image decoding, resizing and most large NumPy operations) or n
forked processes (`executor="process"`, for pure-Python functions; results come back through
shared memory as DataLoader batches do). `deterministic=False` yields results as they finish.
`AUTOTUNE` means one thread (or, with `executor="process"`, one process) per CPU this process
may run on, as tf.data's autotuner caps map parallelism at the schedulable CPUs: the image
work (Pillow's decode, the compiled resize of Note [Compiled resampling], large NumPy
operations) runs without the GIL, so one thread per CPU keeps every CPU busy, and more threads
only add switching and cache misses. Measured on the 2-CPU bench machine with nothing else
running (decode -> resize -> crop -> normalize -> batch 32 over 512 JPEGs, images/s, two runs
each): 1 thread 518/630, 2 threads 933/905, 4 threads 590/672 (CPU time per image 1.8 ms
with 2 threads, 2.5 ms with 4). Before the resize was compiled, when it held the GIL between
its NumPy calls, a second thread per CPU had paid off (4 threads 329/227 against 2 threads
149/208 on a loaded machine). A map function that waits on I/O can ask for more with an
explicit `num_parallel_calls`. `prefetch(n)` runs everything upstream of it in a background
thread, n elements ahead.
"""

from __future__ import annotations

import collections
import glob as _glob
import itertools
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ember._util.pytree import flatten, leaves, map_leaves, unflatten
from ember.data._arrays import is_tensor, to_numpy, to_tensor
from ember.data.dataset import IterableDataset

__all__ = ["AUTOTUNE", "INFINITE_CARDINALITY", "UNKNOWN_CARDINALITY", "Pipeline"]

AUTOTUNE = -1
INFINITE_CARDINALITY = -1
UNKNOWN_CARDINALITY = -2


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _call(fn: Callable, element):
    return fn(*element) if type(element) is tuple else fn(element)


def _map_structure(fn: Callable, element):
    """`fn` over an element's leaves; a list is one value, as in tf.data (Note [Pytrees])."""
    return map_leaves(fn, element, lists=False)


def _leaf_to_user(leaf):
    kind = type(leaf)
    if kind is np.ndarray:
        return leaf if leaf.dtype.kind in "USO" else to_tensor(leaf)
    if isinstance(leaf, np.generic) and not isinstance(leaf, (np.str_, np.bytes_)):
        return to_tensor(np.asarray(leaf))
    return leaf


def _leaf_to_numpy(leaf):
    kind = type(leaf)
    if kind is np.ndarray or kind is bytes:
        return leaf
    if kind is str or kind is np.str_:
        return leaf.encode("utf-8")
    if is_tensor(leaf):
        return leaf.numpy()
    return leaf


def _as_source_leaf(value):
    """A sliceable leaf: NumPy array, or a list of Python strings kept as they are."""
    if is_tensor(value):
        return to_numpy(value)
    if isinstance(value, np.ndarray):
        return value
    if (
        isinstance(value, (list, range))
        and value
        and all(isinstance(v, (str, bytes)) for v in value)
    ):
        return list(value)
    if isinstance(value, (str, bytes)):
        return value
    return np.asarray(value)


def _leaves_of(structure):
    return leaves(structure, lists=False)


def _rebuild(template, leaves_iter):
    return unflatten(flatten(template, lists=False)[1], leaves_iter)


def _normalize_structure(value):
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_normalize_structure(v) for v in value)
    if isinstance(value, tuple):  # namedtuple: a plain tuple of its fields
        return tuple(_normalize_structure(v) for v in value)
    if isinstance(value, dict):
        return {key: _normalize_structure(v) for key, v in value.items()}
    return _as_source_leaf(value)


def _stack_leaves(values: list):
    first = values[0]
    if isinstance(first, (str, bytes, np.str_, np.bytes_)):
        return np.asarray(values)
    tensors = is_tensor(first)
    arrays = [to_numpy(v) if tensors else v for v in values]
    try:
        stacked = np.stack(arrays)
    except ValueError as error:
        shapes = sorted({tuple(np.shape(a)) for a in arrays})
        raise ValueError(
            f"Pipeline.batch: cannot batch elements of different shapes "
            f"{shapes[:4]}; use padded_batch"
        ) from error
    return to_tensor(stacked) if tensors else stacked


def _batch_structure(elements: list):
    """Elements of one structure -> one element of stacked leaves (Note [Pytrees])."""
    structure = flatten(elements[0], lists=False)[1]
    columns = zip(*(leaves(e, lists=False) for e in elements))
    return unflatten(structure, (_stack_leaves(list(column)) for column in columns))


def _unbatch_structure(element) -> Iterator:
    leaves = _leaves_of(element)
    arrays = [to_numpy(leaf) if is_tensor(leaf) else leaf for leaf in leaves]
    sizes = {len(a) for a in arrays}
    if len(sizes) != 1:
        raise ValueError(
            f"Pipeline.unbatch: components have different first dimensions {sorted(sizes)}"
        )
    if type(element) is not tuple and type(element) is not dict:
        return iter(arrays[0])
    return (_rebuild(element, iter(row)) for row in zip(*arrays))


class Pipeline(IterableDataset):
    """A chained, re-iterable input pipeline (tf.data's `Dataset`).

    Example:
        >>> ds = Pipeline.range(10).filter(lambda x: x % 2 == 0).map(lambda x: x * 10)
        >>> [int(x) for x in ds.batch(2).unbatch()]
        [0, 20, 40, 60, 80]
    """

    def __init__(
        self,
        make_iterator: Callable[[], Iterator],
        cardinality: int = UNKNOWN_CARDINALITY,
        name: str = "Pipeline",
    ):
        self._make_iterator = make_iterator
        self._cardinality = cardinality
        self._name = name

    # -- iteration --------------------------------------------------------------------------
    def _elements(self) -> Iterator:
        """The raw elements (Note [Pipeline elements])."""
        return self._make_iterator()

    def __iter__(self):
        for element in self._make_iterator():
            if type(element) is np.ndarray:  # the common case, without the structure walk
                yield _leaf_to_user(element)
            else:
                yield _map_structure(_leaf_to_user, element)

    def as_numpy_iterator(self) -> Iterator:
        """Iterate with NumPy arrays as leaves (str as bytes)."""
        for element in self._make_iterator():
            kind = type(element)
            if (
                kind is np.ndarray
                or kind is bytes
                or isinstance(element, np.generic)
                and kind is not np.str_
            ):
                yield element
            else:
                yield _map_structure(_leaf_to_numpy, element)

    def cardinality(self) -> int:
        """The number of elements; INFINITE_CARDINALITY (-1) or UNKNOWN_CARDINALITY (-2)."""
        return self._cardinality

    def __len__(self) -> int:
        if self._cardinality == INFINITE_CARDINALITY:
            raise TypeError("The dataset is infinite.")
        if self._cardinality == UNKNOWN_CARDINALITY:
            raise TypeError("The dataset length is unknown.")
        return self._cardinality

    def __repr__(self) -> str:
        return f"<{self._name} cardinality={self._cardinality}>"

    def _derive(self, make_iterator, cardinality, name) -> Pipeline:
        return Pipeline(make_iterator, cardinality, name)

    # -- sources ------------------------------------------------------------------------------
    @staticmethod
    def from_tensor_slices(tensors, name: str | None = None) -> Pipeline:
        """One element per row of `tensors` (an array, or a tuple/dict of equally long ones)."""
        structure = _normalize_structure(tensors)
        leaves = _leaves_of(structure)
        lengths = {
            len(leaf) if not isinstance(leaf, np.ndarray) else (leaf.shape[0] if leaf.ndim else -1)
            for leaf in leaves
        }
        if -1 in lengths:
            raise ValueError("Pipeline.from_tensor_slices: cannot slice a scalar")
        if len(lengths) != 1:
            raise ValueError(
                f"Pipeline.from_tensor_slices: all components must have the same "
                f"size in their first dimension, got {sorted(lengths)}"
            )
        (length,) = lengths
        if type(structure) is tuple and all(
            type(s) is not tuple and type(s) is not dict for s in structure
        ):

            def make():
                return zip(*structure)
        elif type(structure) is tuple or type(structure) is dict:

            def make():
                return (_rebuild(structure, iter(row)) for row in zip(*leaves))
        else:

            def make():
                return iter(structure)

        return Pipeline(make, length, "TensorSliceDataset")

    @staticmethod
    def from_tensors(tensors) -> Pipeline:
        """A single element: `tensors` itself."""
        element = _normalize_structure(tensors)
        return Pipeline(lambda: iter((element,)), 1, "TensorDataset")

    @staticmethod
    def from_generator(
        generator: Callable, output_types=None, output_shapes=None, args=None, output_signature=None
    ) -> Pipeline:
        """Elements from `generator(*args)`, called anew for each iteration."""
        if not callable(generator):
            raise TypeError("Pipeline.from_generator: generator must be callable")
        arguments = tuple(args or ())
        dtype = None
        if output_types is not None and not isinstance(output_types, (tuple, dict)):
            dtype = output_types
        spec_dtype = getattr(output_signature, "dtype", None)
        if spec_dtype is not None:
            dtype = spec_dtype
        if dtype is not None:
            from ember.dtypes import as_dtype

            numpy_dtype = as_dtype(dtype).numpy
            return Pipeline(
                lambda: (np.asarray(e, numpy_dtype) for e in generator(*arguments)),
                UNKNOWN_CARDINALITY,
                "FlatMapDataset",
            )
        return Pipeline(
            lambda: (_normalize_generated(e) for e in generator(*arguments)),
            UNKNOWN_CARDINALITY,
            "FlatMapDataset",
        )

    @staticmethod
    def from_iterable(iterable: Iterable) -> Pipeline:
        """Wrap any re-iterable (a list, a DataLoader, ...) as a Pipeline. List elements (a
        DataLoader's collated tuples) become tuples, the Pipeline's structure type."""
        try:
            length = len(iterable)
        except TypeError:
            length = UNKNOWN_CARDINALITY

        def make():
            return (tuple(e) if type(e) is list else e for e in iterable)

        return Pipeline(make, length, "IterableDataset")

    @staticmethod
    def range(*args, output_type=None) -> Pipeline:
        """Like Python's `range`: `range(stop)`, `range(start, stop[, step])`."""
        bounds = range(*args)
        return Pipeline(lambda: iter(bounds), len(bounds), "RangeDataset")

    @staticmethod
    def list_files(file_pattern, shuffle: bool | None = None, seed: int | None = None) -> Pipeline:
        """The files matching a glob pattern (or a list of patterns), as str paths.

        As in tf.data, the names are shuffled each iteration unless `shuffle=False`, and a
        pattern matching nothing is an error.
        """
        patterns = (
            [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
        )
        files = sorted({path for pattern in patterns for path in _glob.glob(os.fspath(pattern))})
        if not files:
            raise FileNotFoundError(f"Pipeline.list_files: no files matched pattern(s) {patterns}")
        dataset = Pipeline.from_tensor_slices(files)
        if shuffle is None or shuffle:
            dataset = dataset.shuffle(len(files), seed=seed)
        return dataset

    @staticmethod
    def zip(*datasets) -> Pipeline:
        """Elements of several pipelines side by side: `zip(a, b)` or `zip((a, b))` or a dict."""
        if len(datasets) == 1 and isinstance(datasets[0], (tuple, list, dict)):
            datasets = datasets[0]
        if isinstance(datasets, dict):
            keys = list(datasets)

            def make():
                return (
                    dict(zip(keys, row)) for row in zip(*(datasets[k]._elements() for k in keys))
                )

            members = list(datasets.values())
        else:
            members = list(datasets)

            def make():
                return zip(*(d._elements() for d in members))

        cards = [d.cardinality() for d in members]
        finite = [c for c in cards if c >= 0]
        if finite:
            cardinality = min(finite)
        elif UNKNOWN_CARDINALITY in cards:
            cardinality = UNKNOWN_CARDINALITY
        else:
            cardinality = INFINITE_CARDINALITY
        if UNKNOWN_CARDINALITY in cards and finite:
            cardinality = UNKNOWN_CARDINALITY
        return Pipeline(make, cardinality, "ZipDataset")

    # -- element-wise transformations -----------------------------------------------------------
    def map(
        self,
        map_func: Callable,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        *,
        executor: str = "thread",
        name: str | None = None,
    ) -> Pipeline:
        """Apply `map_func` to every element (Note [Parallel map])."""
        if executor not in ("thread", "process"):
            raise ValueError(
                f"Pipeline.map: executor must be 'thread' or 'process', got {executor!r}"
            )
        upstream = self
        if num_parallel_calls is None or num_parallel_calls == 1 and executor == "thread":

            def make():
                iterator = upstream._elements()
                for first in iterator:  # noqa: B007 (read after the loop)
                    break
                else:
                    return iter(())
                chained = itertools.chain((first,), iterator)
                if type(first) is tuple:
                    return itertools.starmap(map_func, chained)
                return map(map_func, chained)
        else:
            if num_parallel_calls == AUTOTUNE:
                workers = _cpu_count()
            else:
                workers = int(num_parallel_calls)
            if workers < 1:
                raise ValueError(
                    f"Pipeline.map: num_parallel_calls must be positive or AUTOTUNE, "
                    f"got {num_parallel_calls}"
                )
            ordered = deterministic is None or deterministic

            def make():
                return _parallel_map(upstream._elements(), map_func, workers, ordered, executor)

        return self._derive(make, self._cardinality, "ParallelMapDataset")

    def filter(self, predicate: Callable) -> Pipeline:
        """Keep the elements for which `predicate` is true."""
        upstream = self

        def keep(element):
            return bool(_call(predicate, element))

        return self._derive(
            lambda: filter(keep, upstream._elements()), UNKNOWN_CARDINALITY, "FilterDataset"
        )

    def flat_map(self, map_func: Callable) -> Pipeline:
        """`map_func` returns a Pipeline per element; their elements are chained."""
        upstream = self

        def make():
            for element in upstream._elements():
                yield from _as_pipeline(_call(map_func, element), "flat_map")._elements()

        return self._derive(make, UNKNOWN_CARDINALITY, "FlatMapDataset")

    def interleave(
        self,
        map_func: Callable,
        cycle_length: int | None = None,
        block_length: int | None = None,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
    ) -> Pipeline:
        """Like flat_map, but cycles over `cycle_length` inner pipelines, taking
        `block_length` elements from each in turn (tf.data's order). With
        `num_parallel_calls`, each open inner pipeline is read ahead in a thread."""
        upstream = self
        cycle = _cpu_count() if cycle_length in (None, AUTOTUNE) else int(cycle_length)
        block = 1 if block_length is None else int(block_length)
        parallel = num_parallel_calls is not None

        def make():
            outer = upstream._elements()
            slots: list = []
            exhausted_outer = False

            def open_next():
                nonlocal exhausted_outer
                for element in outer:
                    inner = _as_pipeline(_call(map_func, element), "interleave")._elements()
                    return _read_ahead(inner, 2 * block) if parallel else inner
                exhausted_outer = True
                return None

            while len(slots) < cycle and not exhausted_outer:
                inner = open_next()
                if inner is not None:
                    slots.append(inner)
            position = 0
            while slots:
                position %= len(slots)
                inner = slots[position]
                produced = 0
                for element in inner:
                    yield element
                    produced += 1
                    if produced == block:
                        break
                if produced < block:  # this inner pipeline ended: refill its slot in place
                    replacement = None if exhausted_outer else open_next()
                    if replacement is None:
                        slots.pop(position)
                        continue
                    slots[position] = replacement  # read from the next turn on
                position += 1

        return self._derive(make, UNKNOWN_CARDINALITY, "InterleaveDataset")

    def enumerate(self, start: int = 0) -> Pipeline:
        """Pair each element with its index: `(i, element)`."""
        upstream = self
        return self._derive(
            lambda: enumerate(upstream._elements(), start), self._cardinality, "EnumerateDataset"
        )

    # -- order, size and grouping ---------------------------------------------------------------
    def shuffle(
        self,
        buffer_size: int,
        seed: int | None = None,
        reshuffle_each_iteration: bool | None = None,
    ) -> Pipeline:
        """Shuffle with a buffer of `buffer_size` elements (tf.data's algorithm: fill the
        buffer, then repeatedly emit a random slot and refill it).

        With `seed`, the orders are the same run after run; without, they follow ember's
        default generator (`ember.manual_seed`). `reshuffle_each_iteration` (default True)
        gives each iteration a new order; False replays the first one.
        """
        if buffer_size == AUTOTUNE:
            raise ValueError("Pipeline.shuffle: buffer_size must be a positive integer")
        if int(buffer_size) < 1:
            raise ValueError(f"Pipeline.shuffle: buffer_size must be positive, got {buffer_size}")
        upstream = self
        reshuffle = True if reshuffle_each_iteration is None else reshuffle_each_iteration
        base = _draw_seed() if seed is None else int(seed)
        iteration = itertools.count()

        def make():
            if reshuffle:
                current = next(iteration)
                step_seed = (base, current) if seed is not None or current else (base,)
                if seed is None and current:
                    step_seed = (_draw_seed(),)
            else:
                step_seed = (base,)
            rng = np.random.default_rng(list(step_seed))
            return _shuffle(upstream._elements(), int(buffer_size), rng)

        return self._derive(make, self._cardinality, "ShuffleDataset")

    def batch(
        self,
        batch_size: int,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
    ) -> Pipeline:
        """Stack consecutive elements into batches (a new leading dimension)."""
        if int(batch_size) < 1:
            raise ValueError(f"Pipeline.batch: batch_size must be positive, got {batch_size}")
        size = int(batch_size)
        upstream = self

        def make():
            iterator = upstream._elements()
            while True:
                elements = list(itertools.islice(iterator, size))
                if not elements or (drop_remainder and len(elements) < size):
                    return
                yield _batch_structure(elements)

        return self._derive(
            make, _batched_cardinality(self._cardinality, size, drop_remainder), "BatchDataset"
        )

    def padded_batch(
        self, batch_size: int, padded_shapes=None, padding_values=None, drop_remainder: bool = False
    ) -> Pipeline:
        """Batch elements of different shapes, padding each component to the largest shape in
        the batch (or to `padded_shapes`, where None or -1 means "largest")."""
        size = int(batch_size)
        upstream = self

        def make():
            iterator = upstream._elements()
            while True:
                elements = list(itertools.islice(iterator, size))
                if not elements or (drop_remainder and len(elements) < size):
                    return
                yield _padded_structure(elements, padded_shapes, padding_values)

        return self._derive(
            make,
            _batched_cardinality(self._cardinality, size, drop_remainder),
            "PaddedBatchDataset",
        )

    def unbatch(self) -> Pipeline:
        """Split each element along its first dimension (the inverse of batch)."""
        upstream = self

        def make():
            for element in upstream._elements():
                yield from _unbatch_structure(element)

        return self._derive(make, UNKNOWN_CARDINALITY, "UnbatchDataset")

    def repeat(self, count: int | None = None) -> Pipeline:
        """Iterate `count` times (forever when None or -1), re-running the recipe each time."""
        upstream = self
        forever = count is None or count == -1

        def make():
            repetition = itertools.count() if forever else range(int(count))
            for _ in repetition:
                produced = False
                for element in upstream._elements():
                    produced = True
                    yield element
                if not produced:  # an empty pipeline repeated forever is still empty
                    return

        if forever:
            cardinality = 0 if self._cardinality == 0 else INFINITE_CARDINALITY
        elif self._cardinality >= 0:
            cardinality = self._cardinality * int(count)
        else:
            cardinality = self._cardinality
        return self._derive(make, cardinality, "RepeatDataset")

    def take(self, count: int) -> Pipeline:
        """The first `count` elements (all of them when -1)."""
        upstream = self
        count = int(count)
        if count == -1:
            return self
        if self._cardinality >= 0:
            cardinality = min(count, self._cardinality)
        elif self._cardinality == INFINITE_CARDINALITY:
            cardinality = count
        else:
            cardinality = UNKNOWN_CARDINALITY
        return self._derive(
            lambda: itertools.islice(upstream._elements(), count), cardinality, "TakeDataset"
        )

    def skip(self, count: int) -> Pipeline:
        """All but the first `count` elements (-1 skips everything)."""
        upstream = self
        count = int(count)
        if count == -1:
            return self._derive(lambda: iter(()), 0, "SkipDataset")
        cardinality = (
            max(0, self._cardinality - count) if self._cardinality >= 0 else self._cardinality
        )
        return self._derive(
            lambda: itertools.islice(upstream._elements(), count, None), cardinality, "SkipDataset"
        )

    def shard(self, num_shards: int, index: int) -> Pipeline:
        """Every `num_shards`-th element starting at `index` (one worker's or host's share)."""
        if not 0 <= index < num_shards:
            raise ValueError(f"Pipeline.shard: index {index} not in [0, {num_shards})")
        upstream = self
        cardinality = (
            len(range(index, self._cardinality, num_shards))
            if self._cardinality >= 0
            else self._cardinality
        )
        return self._derive(
            lambda: itertools.islice(upstream._elements(), index, None, num_shards),
            cardinality,
            "ShardDataset",
        )

    def concatenate(self, dataset: Pipeline) -> Pipeline:
        """This pipeline's elements followed by `dataset`'s."""
        upstream = self
        other = _as_pipeline(dataset, "concatenate")
        a, b = self._cardinality, other.cardinality()
        if INFINITE_CARDINALITY in (a, b):
            cardinality = INFINITE_CARDINALITY
        elif UNKNOWN_CARDINALITY in (a, b):
            cardinality = UNKNOWN_CARDINALITY
        else:
            cardinality = a + b
        return self._derive(
            lambda: itertools.chain(upstream._elements(), other._elements()),
            cardinality,
            "ConcatenateDataset",
        )

    # -- performance ------------------------------------------------------------------------------
    def prefetch(self, buffer_size: int) -> Pipeline:
        """Produce up to `buffer_size` elements ahead in a background thread (AUTOTUNE: 2)."""
        size = 2 if buffer_size in (AUTOTUNE, None) else int(buffer_size)
        if size < 0:
            raise ValueError(
                f"Pipeline.prefetch: buffer_size must be >= 0 or AUTOTUNE, got {buffer_size}"
            )
        upstream = self
        if size == 0:
            return self
        return self._derive(
            lambda: _read_ahead(upstream._elements(), size), self._cardinality, "PrefetchDataset"
        )

    def cache(self, filename: str = "", *, allow_unsafe_pickle: bool = False) -> Pipeline:
        """Keep the elements of the first complete iteration, in memory (`filename=""`) or in
        a file, and replay them afterwards. A file cache survives the process: a later
        pipeline with the same file reads it instead of running the upstream recipe.

        The file is read back with the restricted unpickler (Note [Pickle policy]): arrays,
        tensors, containers, numbers and strings. Elements of other types need
        `allow_unsafe_pickle=True`, which trusts whatever file sits at `filename`."""
        upstream = self
        if not filename:
            store: dict[str, list] = {}

            def make():
                if "elements" in store:
                    return iter(store["elements"])
                return _recording(upstream._elements(), store)

            return self._derive(make, self._cardinality, "CacheDataset")
        path = os.fspath(filename)

        def make_file():
            if os.path.exists(path):
                return _read_cache_file(path, allow_unsafe_pickle)
            return _writing_cache_file(upstream._elements(), path)

        return self._derive(make_file, self._cardinality, "CacheDataset")

    def apply(self, transformation_func: Callable[[Pipeline], Pipeline]) -> Pipeline:
        """`transformation_func(self)`: reusable chains of transformations."""
        result = transformation_func(self)
        if not isinstance(result, Pipeline):
            raise TypeError(
                f"Pipeline.apply: the transformation must return a Pipeline, "
                f"got {type(result).__name__}"
            )
        return result

    def reduce(self, initial_state, reduce_func: Callable):
        """Fold the elements: `state = reduce_func(state, element)`."""
        state = initial_state
        for element in self._elements():
            state = reduce_func(state, element)
        return state


# --- helpers ------------------------------------------------------------------------------------


def _normalize_generated(element):
    if type(element) is tuple or type(element) is dict:
        return _map_structure(_generated_leaf, element)
    return _generated_leaf(element)


def _generated_leaf(leaf):
    if isinstance(leaf, (list,)):
        return np.asarray(leaf)
    return leaf


def _as_pipeline(value, where: str) -> Pipeline:
    if isinstance(value, Pipeline):
        return value
    raise TypeError(
        f"Pipeline.{where}: the function must return a Pipeline, got {type(value).__name__}"
    )


def _draw_seed() -> int:
    from ember.backend.random import default_generator

    return int(default_generator("cpu").rng.integers(0, 2**63 - 1))


def _batched_cardinality(cardinality: int, size: int, drop_remainder: bool) -> int:
    if cardinality < 0:
        return cardinality
    return cardinality // size if drop_remainder else -(-cardinality // size)


def _shuffle(iterator: Iterator, buffer_size: int, rng: np.random.Generator) -> Iterator:
    buffer = list(itertools.islice(iterator, buffer_size))
    # Random slots drawn in blocks: one NumPy call per 1024 elements, not per element.
    while True:
        if not buffer:
            return
        draws = rng.random(1024)
        for draw in draws:
            slot = int(draw * len(buffer))
            element = buffer[slot]
            try:
                buffer[slot] = next(iterator)
            except StopIteration:
                buffer[slot] = buffer[-1]
                buffer.pop()
                yield element
                if not buffer:
                    return
                continue
            yield element


def _pad_leaf(values: list, padded_shape, padding_value):
    first = values[0]
    tensors = is_tensor(first)
    arrays = [np.asarray(to_numpy(v) if tensors else v) for v in values]
    rank = arrays[0].ndim
    if any(a.ndim != rank for a in arrays):
        raise ValueError("Pipeline.padded_batch: components must have the same rank")
    largest = [max(a.shape[d] for a in arrays) for d in range(rank)]
    if padded_shape is not None:
        padded_shape = list(padded_shape)
        if len(padded_shape) != rank:
            raise ValueError(
                f"Pipeline.padded_batch: padded shape {padded_shape} does not match rank {rank}"
            )
        for d, want in enumerate(padded_shape):
            if want is not None and want != -1:
                if want < largest[d]:
                    raise ValueError(
                        f"Pipeline.padded_batch: an element of size "
                        f"{largest[d]} in dimension {d} does not fit the padded "
                        f"size {want}"
                    )
                largest[d] = int(want)
    dtype = np.result_type(*arrays)
    if padding_value is None:
        padding_value = "" if dtype.kind in "US" else 0
    out = np.full([len(arrays)] + largest, padding_value, dtype=dtype)
    for position, array in enumerate(arrays):
        out[(position,) + tuple(slice(0, s) for s in array.shape)] = array
    return to_tensor(out) if tensors else out


def _padded_structure(elements: list, shapes, values):
    first = elements[0]
    if type(first) is tuple:
        return tuple(
            _padded_structure(
                [e[i] for e in elements],
                None if shapes is None else shapes[i],
                values[i] if isinstance(values, tuple) else values,
            )
            for i in range(len(first))
        )
    if type(first) is dict:
        return {
            key: _padded_structure(
                [e[key] for e in elements],
                None if shapes is None else shapes[key],
                values[key] if isinstance(values, dict) else values,
            )
            for key in first
        }
    return _pad_leaf(elements, shapes, values)


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _read_ahead(iterator: Iterator, size: int) -> Iterator:
    """Run `iterator` in a daemon thread, `size` elements ahead of the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce():
        try:
            for element in iterator:
                while not stop.is_set():
                    try:
                        buffer.put(element, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item = _DONE
        except BaseException as error:  # carried to the consumer, raised there  # noqa: BLE001
            item = _Failure(error)
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, daemon=True, name="ember-prefetch")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if type(item) is _Failure:
                raise item.error
            yield item
    finally:
        stop.set()
        close = getattr(iterator, "close", None)
        if close is not None and not thread.is_alive():
            close()


def _parallel_map(
    iterator: Iterator, fn: Callable, workers: int, ordered: bool, executor_kind: str
) -> Iterator:
    from concurrent import futures

    if executor_kind == "process":
        pool, submit, finish = _process_pool(fn, workers)
    else:
        pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ember-map")

        def submit(element):
            return pool.submit(_call, fn, element)

        def finish(result):
            return result

    window = 2 * workers
    try:
        if ordered:
            pending: collections.deque = collections.deque()
            for element in iterator:
                pending.append(submit(element))
                if len(pending) >= window:
                    yield finish(pending.popleft().result())
            while pending:
                yield finish(pending.popleft().result())
        else:
            running: set = set()
            for element in iterator:
                running.add(submit(element))
                if len(running) >= window:
                    done, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                    for future in done:
                        yield finish(future.result())
            while running:
                done, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    yield finish(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if executor_kind == "process":
            _finish_process_pool(pool)


# Process-backed map: the function is registered before the pool forks, so lambdas and
# closures work (nothing is pickled but the elements and the results).
_PROCESS_FUNCTIONS: dict[int, tuple[Callable, str, str]] = {}
_process_counter = itertools.count()
_process_arena = None


def _process_call(key: int, element):
    global _process_arena
    from ember.data._worker import _SharedArena

    fn, directory, prefix = _PROCESS_FUNCTIONS[key]
    if _process_arena is None or _process_arena.prefix != f"{prefix}{os.getpid()}-":
        _process_arena = _SharedArena(directory, f"{prefix}{os.getpid()}-")
    payload = _process_arena.dumps(_call(fn, element))
    _process_arena.release_unsent()
    return payload


def _process_pool(fn: Callable, workers: int):
    import multiprocessing
    from concurrent import futures

    from ember.data._worker import remove_orphaned_segments, shared_memory_dir

    remove_orphaned_segments(
        shared_memory_dir()
    )  # of processes that died (Note [Shared-memory batches])
    key = next(_process_counter)
    prefix = f"ember-map-{os.getpid()}-{key}-"
    _PROCESS_FUNCTIONS[key] = (fn, shared_memory_dir(), prefix)
    pool = futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("fork")
    )
    pool._ember_key = key  # for _finish_process_pool

    def submit(element):
        return pool.submit(_process_call, key, element)

    return pool, submit, pickle.loads


def _finish_process_pool(pool) -> None:
    from ember.data._worker import remove_segments, shared_memory_dir

    key = pool._ember_key
    _PROCESS_FUNCTIONS.pop(key, None)
    remove_segments(shared_memory_dir(), f"ember-map-{os.getpid()}-{key}-")


def _recording(iterator: Iterator, store: dict) -> Iterator:
    recorded = []
    for element in iterator:
        recorded.append(element)
        yield element
    store["elements"] = recorded  # only a complete pass is kept, as in tf.data


def _writing_cache_file(iterator: Iterator, path: str) -> Iterator:
    from ember.io.atomic import remove_stale_temporaries
    from ember.io.formats import CACHE_MAGIC

    remove_stale_temporaries(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    complete = False
    try:
        with open(temporary, "wb") as handle:
            handle.write(CACHE_MAGIC)
            for element in iterator:
                pickle.dump(element, handle, protocol=pickle.HIGHEST_PROTOCOL)
                yield element
        os.replace(temporary, path)  # atomically: a partial pass never becomes the cache
        complete = True
    finally:
        if not complete and os.path.exists(temporary):
            os.unlink(temporary)


def _read_cache_file(path: str, allow_unsafe_pickle: bool) -> Iterator:
    """The elements of a cache file, through the restricted unpickler (Note [Pickle policy]):
    a file that ember did not write, or one planted at the path, runs no code."""
    from ember.io.formats import CACHE_MAGIC, sniff, unpickle

    with open(path, "rb") as handle:
        prefix = handle.read(len(CACHE_MAGIC))
        if sniff(prefix, name="") != "ember-cache":
            raise ValueError(
                f"Pipeline.cache: {path!r} exists but is not an ember cache file (it does not "
                f"start with {CACHE_MAGIC!r}); delete it or choose another filename"
            )
        while True:
            try:
                yield unpickle(
                    handle,
                    path,
                    allow_pickle=True,
                    allow_unsafe_pickle=allow_unsafe_pickle,
                    where="Pipeline.cache",
                )
            except EOFError:
                return
