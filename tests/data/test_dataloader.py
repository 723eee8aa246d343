"""DataLoader behaviour, checked against PyTorch's DataLoader where semantics match."""

import os

import numpy as np
import pytest

from ember import data
from ember.data._arrays import to_numpy

# Shared-memory files this test process made (`ember-dl-<pid>-...`, `ember-map-<pid>-...`):
# other test runs on the machine make theirs at the same time.
_OURS = (f"ember-dl-{os.getpid()}-", f"ember-map-{os.getpid()}-")

torch = pytest.importorskip("torch")


class Squares(data.Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, index):
        return {"x": np.full((3,), index, np.float32), "y": index, "name": f"s{index}"}


def as_lists(batches):
    return [
        {"x": to_numpy(b["x"]).tolist(), "y": to_numpy(b["y"]).tolist(), "name": b["name"]}
        for b in batches
    ]


def torch_lists(batches):
    return [
        {"x": b["x"].numpy().tolist(), "y": b["y"].numpy().tolist(), "name": b["name"]}
        for b in batches
    ]


def shm_files():
    return (
        {n for n in os.listdir("/dev/shm") if n.startswith(_OURS)}
        if os.path.isdir("/dev/shm")
        else set()
    )


@pytest.mark.parametrize("num_workers", [0, 1, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_match_torch(num_workers, drop_last):
    ours = data.DataLoader(Squares(), batch_size=5, drop_last=drop_last, num_workers=num_workers)
    theirs = torch.utils.data.DataLoader(Squares(), batch_size=5, drop_last=drop_last)
    got = as_lists(ours)
    assert got == torch_lists(theirs)
    assert len(ours) == len(theirs) == len(got)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shuffle_every_sample_once_and_same_order_for_any_workers(num_workers):
    from ember.backend import random

    def run(workers):
        random.manual_seed(123)
        loader = data.DataLoader(Squares(), batch_size=4, shuffle=True, num_workers=workers)
        return [v for b in loader for v in to_numpy(b["y"]).tolist()]

    first = run(num_workers)
    assert sorted(first) == list(range(23))
    assert first != list(range(23))
    assert run(0) == first == run(1)


def test_generator_gives_reproducible_epochs():
    from ember.backend import random

    loader = data.DataLoader(
        Squares(), batch_size=23, shuffle=True, generator=random.Generator().manual_seed(7)
    )
    epoch1 = to_numpy(next(iter(loader))["y"]).tolist()
    epoch2 = to_numpy(next(iter(loader))["y"]).tolist()
    assert epoch1 != epoch2
    loader.generator.manual_seed(7)
    assert to_numpy(next(iter(loader))["y"]).tolist() == epoch1


class Augmented(data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, index):
        from ember.backend import random

        return random.default_generator().rng.random(), np.random.rand()


def test_random_augmentation_same_with_any_num_workers():
    from ember.backend import random

    results = []
    for workers in (0, 1, 2):
        random.manual_seed(5)
        loader = data.DataLoader(Augmented(), batch_size=3, num_workers=workers)
        results.append([to_numpy(b[0]).tolist() + to_numpy(b[1]).tolist() for b in loader])
    assert results[0] == results[1] == results[2]
    flat = [v for batch in results[0] for v in batch]
    assert len(set(flat)) == len(flat)  # no duplicated augmentation across batches


def test_main_process_random_state_is_restored():
    from ember.backend import random

    # one seed drawn for the loader, then the stream continues as if nothing else happened
    random.manual_seed(3)
    random.default_generator().rng.integers(0, 2**62)
    after_draw = random.default_generator().rng.random()
    random.manual_seed(3)
    list(data.DataLoader(Augmented(), batch_size=4))
    assert random.default_generator().rng.random() == after_draw


def test_collate_structure_matches_torch():
    samples = [(np.ones((2, 2), np.float32) * i, i, float(i), "a", {"k": [i, i]}) for i in range(3)]
    ours = data.default_collate(samples)
    theirs = torch.utils.data.default_collate(samples)
    assert isinstance(ours, list) and isinstance(theirs, list)
    assert to_numpy(ours[0]).tolist() == theirs[0].numpy().tolist()
    assert to_numpy(ours[1]).dtype == np.int64 and to_numpy(ours[2]).dtype == np.float64
    assert ours[3] == theirs[3] == ("a", "a", "a")  # the zip tuple, as in PyTorch
    assert [to_numpy(v).tolist() for v in ours[4]["k"]] == [
        v.numpy().tolist() for v in theirs[4]["k"]
    ]


def test_collate_errors():
    with pytest.raises(RuntimeError, match="equal size"):
        data.default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="found"):
        data.default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="equal size"):
        data.default_collate([np.zeros(2), np.zeros(3)])


def test_batch_size_none_and_batch_sampler_and_getitems():
    calls = []

    class Batched(data.TensorDataset):
        def __getitems__(self, indices):
            calls.append(list(indices))
            return super().__getitems__(indices)

    ds = Batched(np.arange(10), np.arange(10) * 2)
    loader = data.DataLoader(ds, batch_sampler=[[0, 1], [5, 9, 2]])
    batches = [[to_numpy(t).tolist() for t in b] for b in loader]
    assert batches == [[[0, 1], [0, 2]], [[5, 9, 2], [10, 18, 4]]]
    assert calls == [[0, 1], [5, 9, 2]]
    single = list(data.DataLoader(data.TensorDataset(np.arange(3)), batch_size=None))
    assert [to_numpy(s[0]).tolist() for s in single] == [0, 1, 2]


def test_option_errors_match_torch():
    ds = Squares()
    for kwargs in (
        {"batch_sampler": [[0]], "batch_size": 2},
        {"sampler": [0], "shuffle": True},
        {"num_workers": -1},
        {"batch_size": None, "drop_last": True},
        {"prefetch_factor": 2},
        {"persistent_workers": True},
        {"timeout": -1},
    ):
        with pytest.raises(ValueError):
            torch.utils.data.DataLoader(ds, **kwargs)
        with pytest.raises(ValueError):
            data.DataLoader(ds, **kwargs)


class Stream(data.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = data.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_iterable_dataset_matches_torch(num_workers):
    ours = [
        to_numpy(b).tolist()
        for b in data.DataLoader(Stream(11), batch_size=3, num_workers=num_workers)
    ]
    values = sorted(v for b in ours for v in b)
    assert values == list(range(11))
    if num_workers == 0:

        class TorchStream(torch.utils.data.IterableDataset):
            def __iter__(self):
                return iter(range(11))

        theirs = [b.tolist() for b in torch.utils.data.DataLoader(TorchStream(), batch_size=3)]
        assert ours == theirs


def test_worker_info_and_init_fn(tmp_path):
    class Info(data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            info = data.get_worker_info()
            return info.id, info.num_workers, os.path.exists(tmp_path / f"w{info.id}")

    def init(worker_id):
        (tmp_path / f"w{worker_id}").write_text("x")

    loader = data.DataLoader(Info(), batch_size=1, num_workers=2, worker_init_fn=init)
    rows = [[to_numpy(v).item() for v in b] for b in loader]
    assert [r[0] for r in rows] == [0, 1, 0, 1]
    assert all(r[1] == 2 and r[2] for r in rows)
    assert data.get_worker_info() is None


def test_large_batches_travel_through_shared_memory_and_nothing_leaks():
    before = shm_files()

    class Big(data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            return np.full((64, 64, 3), index, np.float32)

    batches = list(data.DataLoader(Big(), batch_size=2, num_workers=2))
    assert [float(to_numpy(b)[1, 0, 0, 0]) for b in batches] == [1, 3, 5, 7]
    assert shm_files() == before


def test_persistent_workers_keep_processes_between_epochs():
    loader = data.DataLoader(Squares(), batch_size=6, num_workers=2, persistent_workers=True)
    first = as_lists(loader)
    pool = loader._iterator._pool
    pids = [w.pid for w in pool.workers]
    second = as_lists(loader)
    assert first == second
    assert [w.pid for w in loader._iterator._pool.workers] == pids
    # break early: the leftover batches are dropped by epoch number
    for _ in loader:
        break
    assert as_lists(loader) == first
    loader._iterator._shutdown()


def test_dataloader_as_pipeline():
    loader = data.DataLoader(data.TensorDataset(np.arange(6)), batch_size=2)
    pipeline = loader.as_pipeline().unbatch()
    assert [int(v[0]) for v in pipeline.as_numpy_iterator()] == list(range(6))
