"""Pipeline (tf.data style): element order and structure checked against tf.data."""

import os
import threading
import time

import numpy as np
import pytest

from ember.data import AUTOTUNE, Pipeline


def values(pipeline):
    return [
        np.asarray(v).tolist()
        if not isinstance(v, tuple)
        else tuple(np.asarray(x).tolist() for x in v)
        for v in pipeline.as_numpy_iterator()
    ]


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


def tf_values(dataset):
    return [
        np.asarray(v).tolist()
        if not isinstance(v, tuple)
        else tuple(np.asarray(x).tolist() for x in v)
        for v in dataset.as_numpy_iterator()
    ]


CHAINS = [
    lambda D: D.range(10).map(lambda x: x * 2).filter(lambda x: x % 3 != 0),
    lambda D: D.range(7).batch(3),
    lambda D: D.range(7).batch(3, drop_remainder=True),
    lambda D: D.range(8).batch(3).unbatch(),
    lambda D: D.range(5).repeat(2).skip(3).take(4),
    lambda D: D.range(3).enumerate(start=5),
    lambda D: D.range(3).concatenate(D.range(10, 12)),
    lambda D: D.zip((D.range(3), D.range(5, 9))),
    lambda D: D.range(1, 4).flat_map(lambda x: D.range(x)),
    lambda D: D.range(1, 5).interleave(
        lambda x: D.from_tensors(x).repeat(x), cycle_length=2, block_length=2
    ),
    lambda D: D.range(1, 4).interleave(lambda x: D.range(x), cycle_length=3),
    lambda D: D.from_tensor_slices(([1, 2, 3], [4, 5, 6])).map(lambda a, b: a * 10 + b),
    lambda D: D.from_tensor_slices(np.arange(12).reshape(6, 2)).batch(4),
    lambda D: D.range(10).shard(3, 1),
    lambda D: D.range(10).apply(lambda d: d.take(2)),
]


@pytest.mark.parametrize("chain", range(len(CHAINS)))
def test_chains_match_tf_data(tf, chain):
    ours = values(CHAINS[chain](Pipeline))
    theirs = tf_values(CHAINS[chain](tf.data.Dataset))
    assert ours == theirs


@pytest.mark.parametrize("chain", [0, 1, 2, 4, 6, 7, 12, 13])
def test_cardinality_matches_tf_data(tf, chain):
    assert CHAINS[chain](Pipeline).cardinality() == int(
        CHAINS[chain](tf.data.Dataset).cardinality()
    )


def test_padded_batch_matches_tf(tf):
    def gen():
        for n in (1, 3, 2):
            yield np.arange(n)

    ours = Pipeline.from_generator(gen).padded_batch(2, padding_values=-1)
    theirs = tf.data.Dataset.from_generator(
        gen, output_signature=tf.TensorSpec([None], tf.int64)
    ).padded_batch(2, padding_values=np.int64(-1))
    assert values(ours) == tf_values(theirs)


def test_dict_elements_and_from_tensor_slices_strings():
    ds = Pipeline.from_tensor_slices({"a": np.arange(3), "name": ["x", "y", "z"]})
    rows = list(ds.as_numpy_iterator())
    assert rows[1]["a"] == 1 and rows[1]["name"] == b"y"
    batch = next(iter(ds.batch(3)))
    assert list(batch["name"]) == ["x", "y", "z"]


def test_shuffle_seeded_and_reshuffled():
    ds = Pipeline.range(20).shuffle(8, seed=3)
    first, second = values(ds), values(ds)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert first != second
    assert values(Pipeline.range(20).shuffle(8, seed=3)) == first
    fixed = Pipeline.range(20).shuffle(8, seed=3, reshuffle_each_iteration=False)
    assert values(fixed) == values(fixed)


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_parallel_map(executor, deterministic):
    ds = Pipeline.range(50).map(
        lambda x: np.full((100, 100), x),
        num_parallel_calls=2,
        deterministic=deterministic,
        executor=executor,
    )
    got = [int(v[0, 0]) for v in ds.as_numpy_iterator()]
    assert sorted(got) == list(range(50))
    if deterministic:
        assert got == list(range(50))


def test_parallel_map_really_overlaps():
    barrier = threading.Barrier(2, timeout=10)

    def wait_for_partner(x):
        barrier.wait()  # deadlocks (BrokenBarrierError after 10 s) unless two calls overlap
        return x

    assert values(Pipeline.range(4).map(wait_for_partner, num_parallel_calls=2)) == [0, 1, 2, 3]


def test_prefetch_runs_ahead_and_propagates_errors():
    produced = []

    def slow(x):
        produced.append(x)
        return x

    iterator = iter(Pipeline.range(10).map(slow).prefetch(3).as_numpy_iterator())
    assert next(iterator) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 4

    def boom(x):
        if x == 2:
            raise ValueError("boom at 2")
        return x

    with pytest.raises(ValueError, match="boom at 2"):
        list(Pipeline.range(5).map(boom, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))


def test_cache_in_memory_and_file(tmp_path):
    calls = []

    def count(x):
        calls.append(x)
        return x

    ds = Pipeline.range(4).map(count).cache()
    assert values(ds) == values(ds) == [0, 1, 2, 3]
    assert calls == [0, 1, 2, 3]
    path = str(tmp_path / "cache.bin")
    assert values(Pipeline.range(3).map(lambda x: x * 2).cache(path)) == [0, 2, 4]
    assert os.path.exists(path)
    assert values(Pipeline.range(100).cache(path)) == [0, 2, 4]  # replays the file


def test_list_files(tmp_path):
    for name in ("b.txt", "a.txt", "c.log"):
        (tmp_path / name).write_text(name)
    files = Pipeline.list_files(str(tmp_path / "*.txt"), shuffle=False)
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.txt"]
    with pytest.raises(FileNotFoundError):
        Pipeline.list_files(str(tmp_path / "*.png"))


def test_pipeline_feeds_a_dataloader():
    from ember.data import DataLoader
    from ember.data._arrays import to_numpy

    loader = DataLoader(Pipeline.range(6), batch_size=4)
    assert [to_numpy(b).tolist() for b in loader] == [[0, 1, 2, 3], [4, 5]]


def test_errors_are_clear():
    with pytest.raises(ValueError, match="same size"):
        Pipeline.from_tensor_slices((np.arange(3), np.arange(4)))
    with pytest.raises(ValueError, match="padded_batch"):
        list(Pipeline.from_generator(lambda: iter([np.zeros(2), np.zeros(3)])).batch(2))
    with pytest.raises(TypeError, match="infinite"):
        len(Pipeline.range(3).repeat())
