"""Hostile and unlucky files (issue 19): structural sniffing, the pickle policy, atomic writes,
errors that name the file."""

import errno
import os
import pickle
import struct

import numpy as np
import pytest

import ember
from ember import nn
from ember.io import PickleRefusedError, load, save
from ember.io.formats import UnsafePickleError, sniff, sniff_file


class _Payload:
    """A pickle that runs code when loaded: it creates the file named in `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- item 1: sniffing by structure


@pytest.mark.parametrize("layers", [1, 4, 5, 6, 7, 9])
def test_saved_files_load_whatever_their_header_length(tmp_path, layers):
    path = str(tmp_path / "m.safetensors")
    state = nn.Sequential(*[nn.Linear(1, 1)] * layers).state_dict()
    save(state, path)
    loaded = load(path)
    assert sorted(loaded) == sorted(state)
    with open(path, "rb") as f:
        assert load(f).keys() == loaded.keys()  # the file-object path sniffs the same way


@pytest.mark.parametrize("length", [640, 896, 1152, 1408, 0x280 + 256 * 37])
def test_header_lengths_starting_with_the_pickle_opcode_are_safetensors(tmp_path, length):
    header = b'{"__metadata__":{"pad":"' + b"x" * (length - 30) + b'"}}'
    header += b" " * (length - len(header))
    assert len(header) == length and header[:1] == b"{"
    blob = struct.pack("<Q", length) + header
    assert blob[:1] == b"\x80"
    assert sniff(blob[:16], len(blob)) == "safetensors"
    path = tmp_path / "odd.bin"  # even a pickle-like suffix does not override the structure
    path.write_bytes(blob)
    assert sniff_file(path) == "safetensors"
    assert load(str(path)) == {}


@pytest.mark.parametrize(
    "prefix, kind",
    [
        (pickle.dumps({"a": 1}, protocol=2), "pickle"),
        (pickle.dumps({"a": 1}, protocol=5), "pickle"),
        (b"\x1f\x8b\x08\x00" + bytes(12), "gzip"),
        (b"\xff\xd8\xff\xe0" + bytes(12), "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + bytes(8), "png"),
        (b"\x00\x00\x08\x03" + bytes(12), "idx"),
        (b"\x80\x04\x00" + bytes(13), "unknown"),  # protocol 4 without its FRAME is no pickle
        (struct.pack("<Q", 10**9) + b"{" + bytes(7), "unknown"),  # header longer than the file
    ],
)
def test_sniff_table(prefix, kind):
    assert sniff(prefix[:16], len(prefix) + 100) == kind


def test_trainer_resume_reads_optimizer_files_with_such_lengths(tmp_path):
    # Trainer resume loads optimizer.pt / scheduler.pt with ember.load: the same rule.
    path = str(tmp_path / "optimizer.pt")
    model = nn.Sequential(*[nn.Linear(1, 1)] * 4)
    optimizer = ember.optim.Adam(model.parameters())
    model(ember.ones(2, 1)).sum().backward()
    optimizer.step()
    save(optimizer.state_dict(), path)
    optimizer.load_state_dict(load(path))


# ---------------------------------------------------------------- items 3 and 4: pickle policy


def _torch_zip(path, obj):
    torch = pytest.importorskip("torch")
    torch.save(obj, path)


def test_torch_zip_with_payload_is_refused_even_when_pickle_is_allowed(tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pt")
    _torch_zip(path, {"w": _Payload(str(marker))})
    with pytest.raises(PickleRefusedError, match="evil.pt"):
        load(path)
    with pytest.raises(UnsafePickleError, match=r"evil.pt.*io\.open"):
        load(path, allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        load(path, allow_pickle=True, weights_only=False)  # torch's flag never widens it
    assert not marker.exists()
    load(path, allow_unsafe_pickle=True)  # named explicitly: full pickle
    assert marker.exists()


def test_torch_zip_weights_load_with_the_restricted_unpickler(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "ok.pt")
    weight = torch.arange(12.0).reshape(3, 4)
    torch.save({"w": weight[:, 1:], "b": torch.zeros(2, dtype=torch.int64), "n": [1, "x"]}, path)
    loaded = load(path, allow_pickle=True, framework="np")
    np.testing.assert_array_equal(loaded["w"], weight[:, 1:].numpy())
    assert loaded["b"].dtype == np.int64 and loaded["n"] == [1, "x"]


def test_plain_pickles_restricted_unless_unsafe_named(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(PickleRefusedError):
        load(str(evil))
    with pytest.raises(UnsafePickleError, match="evil.pkl"):
        load(str(evil), allow_pickle=True)
    assert not marker.exists()
    data = tmp_path / "data.pkl"
    data.write_bytes(pickle.dumps({"t": ember.tensor([1.0, 2.0]), "a": np.arange(3), "s": {1}}))
    loaded = load(str(data), allow_pickle=True)
    assert loaded["t"].tolist() == [1.0, 2.0] and loaded["a"].tolist() == [0, 1, 2]


def test_torch_zip_tensor_records_cannot_reach_outside_their_storage(tmp_path):
    torch = pytest.importorskip("torch")
    import zipfile

    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(4)}, str(path))
    # Patch the record's size (4,) to (4000000,): as_strided would read foreign memory.
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    assert b"K\x04\x85" in entries[name]
    entries[name] = entries[name].replace(b"K\x04\x85", b"J\x00\x09\x3d\x00\x85", 1)
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in entries.items():
            archive.writestr(n, data)
    with pytest.raises(Exception, match="storage"):
        load(str(path), allow_pickle=True)


def test_pipeline_cache_never_runs_a_planted_pickle(tmp_path):
    from ember.data.pipeline import Pipeline

    marker = tmp_path / "ran"
    planted = tmp_path / "cache.bin"
    planted.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match="cache.bin.*not an ember cache file"):
        list(Pipeline.from_tensor_slices(np.arange(3)).cache(str(planted)))
    assert not marker.exists()
    # A planted payload behind the right magic is still refused by the restricted unpickler.
    from ember.io.formats import CACHE_MAGIC

    planted.write_bytes(CACHE_MAGIC + pickle.dumps(_Payload(str(marker))))
    with pytest.raises(UnsafePickleError, match="cache.bin"):
        list(Pipeline.from_tensor_slices(np.arange(3)).cache(str(planted)))
    assert not marker.exists()
    # Its own files round-trip.
    good = str(tmp_path / "good.cache")
    first = [np.asarray(x).tolist() for x in Pipeline.from_tensor_slices(np.arange(3)).cache(good)]
    again = [np.asarray(x).tolist() for x in Pipeline.from_tensor_slices(np.zeros(1)).cache(good)]
    assert first == again == [0, 1, 2]


# ---------------------------------------------------------------- items 9 and 11: atomic writes


def test_write_file_on_a_full_disk_leaves_no_temporary_and_names_the_file(tmp_path, monkeypatch):
    from ember.io import files

    target = tmp_path / "out.bin"
    real_open = open

    class _Full:
        def __init__(self, *a, **k):
            self._file = real_open(*a, **k)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._file, name)

    monkeypatch.setattr("builtins.open", _Full)
    with pytest.raises(OSError, match="out.bin.*disk is full"):
        files.write_file(str(target), b"x" * 100)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_temporaries_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    from ember.io import atomic_write

    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".w.bin.tmp-{dead_pid}-abcd1234"
    stale.write_bytes(b"half")
    live = tmp_path / f".w.bin.tmp-{os.getpid()}-00000000"
    live.write_bytes(b"mine")
    with atomic_write(tmp_path / "w.bin") as f:
        f.write(b"whole")
    assert sorted(os.listdir(tmp_path)) == sorted(["w.bin", live.name])


def test_safe_open_does_not_mask_the_real_error(tmp_path):
    from ember.io import safe_open, save_file

    path = str(tmp_path / "m.safetensors")
    save_file({"a": np.ones(4, np.float32)}, path)
    with pytest.raises(ZeroDivisionError):
        with safe_open(path, framework="np") as handle:
            view = np.frombuffer(handle._map, np.uint8)  # a live export of the map
            assert view.size
            raise ZeroDivisionError


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_unsigned_dtypes_ember_lacks_are_named_with_file_and_tensor(tmp_path, dtype):
    from ember.io import load_file, save_file

    path = str(tmp_path / "unsigned.safetensors")
    save_file({"ids": np.arange(3, dtype=dtype)}, path)
    for read in (load_file, load):
        with pytest.raises(TypeError, match=r"unsigned.safetensors.*'ids'.*framework='np'"):
            read(path)
    assert load_file(path, framework="np")["ids"].dtype == dtype
    assert load(path, framework="np")["ids"].dtype == dtype
