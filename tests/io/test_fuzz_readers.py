"""Fuzz tests of every reader of outside files (issue 19): safetensors, ember checkpoints,
image decoders, tokenizer folders and config.json. Each input is a valid file mutated by
hypothesis (bytes flipped, cut, inserted; JSON fields replaced with hostile values). A reader
may accept the input or raise one of the documented errors (ValueError and its subclasses,
OSError, the pickle refusals) whose message names the file; anything else (KeyError,
TypeError, struct.error, UnicodeDecodeError, RecursionError, MemoryError...), a message that
does not name the file, a run longer than the deadline, or a peak allocation above
`MAX_PEAK_BYTES` fails. Bounded: a few hundred cases per reader, ~20 s in all.

Case counts at the default 150 examples (derandomized, so the same every run; the module
prints them with `-s`), accepted / refused with a named error:
    safetensors (bytes) 150: 5 / 145       safetensors (header) 150: 0 / 150
    checkpoint (bytes) 150: 9 / 141        checkpoint (tree) 150: 54 / 96
    checkpoint (nesting) 30                image decoders 150: 0 / 150 (JPEG, PNG, GIF, BMP)
    tokenizer (bytes) 150: 54 / 96         tokenizer (fields) 150: 61 / 89
    config.json (bytes) 150: 6 / 144       config.json (fields) 150: 25 / 125
Before the fixes of issue 19 they found: RecursionError from deep JSON, TypeError and
binascii errors from malformed checkpoint trees, int64 wrap-around in shape products, Pillow
errors other than OSError, AttributeError/TypeError from non-string config and tokenizer
fields, and config values refused by the model or tokenizer without the file's name.
"""

import io
import json
import os
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests use hypothesis (test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ember  # noqa: E402
from ember.io import PickleRefusedError, load, load_file, safe_open, save  # noqa: E402

MAX_PEAK_BYTES = 64 << 20
FUZZ = settings(
    max_examples=int(os.environ.get("EMBER_FUZZ_EXAMPLES", "150")),
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same cases every run: a failure reproduces
    database=None,
)
COUNTS: dict = {}


def _count(reader: str, outcome: str) -> None:
    COUNTS.setdefault(reader, {}).setdefault(outcome, 0)
    COUNTS[reader][outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    lines = []
    for reader, counts in sorted(COUNTS.items()):
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        lines.append(f"  {reader}: {sum(counts.values())} cases ({outcomes})")
    if lines:
        print("\nfuzz case counts:\n" + "\n".join(lines))


def _guarded(reader: str, name: str, call, allowed=(ValueError, OSError), max_peak=MAX_PEAK_BYTES):
    """Run `call`; fail on an undocumented error, an unnamed error or a big allocation."""
    tracemalloc.start()
    try:
        call()
        _count(reader, "accepted")
    except allowed as error:
        message = str(error)
        assert name in message, f"{reader}: error does not name {name!r}: {error!r}"
        _count(reader, "refused")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < max_peak, f"{reader}: peak allocation {peak:,} bytes"


# ---------------------------------------------------------------------- byte mutations


@st.composite
def mutated(draw, original: bytes):
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "length"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0, 0x22, 0x2C, 0x5B, 0x7B, 0x7D, 0x80, 0xFF]))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "length" and len(data) >= 8:  # the safetensors header length field
            data[0:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 640, 2**31, 2**63])))
    return bytes(data)


_HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 1e308, float("nan")]),
    st.text(max_size=6),
    st.lists(st.integers(-3, 2**33), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _write(folder, name, data):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------- safetensors


def _valid_safetensors() -> bytes:
    buffer = io.BytesIO()
    from ember.io.safetensors import _prepare, _write as write_tensors

    header, arrays = _prepare(
        {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.ones(3, np.int64),
            "h": np.zeros((2, 2), np.float16),
        },
        {"format": "pt"},
        "fuzz",
    )
    write_tensors(buffer, header, arrays)
    return buffer.getvalue()


SAFETENSORS = _valid_safetensors()


def _read_all_safetensors(path):
    load_file(path, framework="np")
    with safe_open(path, framework="np") as handle:
        for key in handle.keys():
            handle.get_slice(key)[:1]


@FUZZ
@given(data=mutated(SAFETENSORS))
def test_fuzz_safetensors_bytes(tmp_path, data):
    path = _write(tmp_path, "fuzz.safetensors", data)
    _guarded("safetensors (bytes)", "fuzz.safetensors", lambda: _read_all_safetensors(path))


@FUZZ
@given(
    dtype=st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "X9", 3, None]),
    shape=st.one_of(_HOSTILE_VALUES, st.lists(st.integers(-2, 2**40), max_size=5)),
    offsets=st.one_of(_HOSTILE_VALUES, st.lists(st.integers(-8, 2**40), min_size=2, max_size=2)),
    metadata=_HOSTILE_VALUES,
    data_size=st.integers(0, 64),
)
def test_fuzz_safetensors_header(tmp_path, dtype, shape, offsets, metadata, data_size):
    header = {"t": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path = _write(tmp_path, "hdr.safetensors", struct.pack("<Q", len(raw)) + raw + bytes(data_size))
    _guarded("safetensors (header)", "hdr.safetensors", lambda: _read_all_safetensors(path))


# ---------------------------------------------------------------------- ember checkpoints


def _valid_checkpoint() -> tuple[bytes, dict]:
    buffer = io.BytesIO()
    save(
        {
            "model": {"w": ember.ones(2, 2)},
            "optimizer": {"state": {0: {"step": 3}}, "param_groups": [{"betas": (0.9, 0.99)}]},
            "best": float("inf"),
            "blob": b"\x00\x01",
            "dtype": ember.float32,
        },
        buffer,
    )
    return buffer.getvalue()


CHECKPOINT = _valid_checkpoint()
_TAGS = [
    "__tensor__",
    "__ndarray__",
    "__tuple__",
    "__items__",
    "__float__",
    "__bytes__",
    "__dtype__",
]


@st.composite
def hostile_trees(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(_HOSTILE_VALUES)
    if draw(st.booleans()):
        return {draw(st.sampled_from(_TAGS)): draw(hostile_trees(depth + 1))}
    return [draw(hostile_trees(depth + 1)) for _ in range(draw(st.integers(0, 3)))]


def _checkpoint_with_tree(tree) -> bytes:
    from ember.io.safetensors import _prepare, _write as write_tensors

    metadata = {"format": "ember", "ember.checkpoint": "1", "ember.tree": json.dumps(tree)}
    header, arrays = _prepare({"model.w": np.ones((2, 2), np.float32)}, metadata, "fuzz")
    buffer = io.BytesIO()
    write_tensors(buffer, header, arrays)
    return buffer.getvalue()


@FUZZ
@given(data=mutated(CHECKPOINT))
def test_fuzz_checkpoint_bytes(tmp_path, data):
    path = _write(tmp_path, "ckpt.pt", data)
    allowed = (ValueError, OSError, PickleRefusedError)
    _guarded("checkpoint (bytes)", "ckpt.pt", lambda: load(path), allowed)


@FUZZ
@given(tree=hostile_trees())
def test_fuzz_checkpoint_tree(tmp_path, tree):
    path = _write(tmp_path, "tree.safetensors", _checkpoint_with_tree(tree))
    _guarded("checkpoint (tree)", "tree.safetensors", lambda: load(path))


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 30))  # each case parses ~100 KB
@given(depth=st.integers(100, 100_000))
def test_fuzz_checkpoint_deep_nesting(tmp_path, depth):
    tree = "[" * depth + "1" + "]" * depth
    from ember.io.safetensors import _prepare, _write as write_tensors

    metadata = {"format": "ember", "ember.checkpoint": "1", "ember.tree": tree}
    header, arrays = _prepare({}, metadata, "fuzz")
    buffer = io.BytesIO()
    write_tensors(buffer, header, arrays)
    path = _write(tmp_path, "deep.safetensors", buffer.getvalue())
    _guarded("checkpoint (nesting)", "deep.safetensors", lambda: load(path))


# ---------------------------------------------------------------------- image decoders


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    out = {}
    for fmt in ("JPEG", "PNG", "GIF", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


pytest.importorskip("PIL", reason="image decoding needs Pillow")
IMAGES = _images()


@FUZZ
@given(
    fmt=st.sampled_from(sorted(IMAGES)),
    data=st.data(),
    decoder=st.sampled_from(["decode_image", "decode_jpeg", "decode_png"]),
)
def test_fuzz_image_decoders(fmt, data, decoder):
    from ember.vision import image

    blob = data.draw(mutated(IMAGES[fmt]))
    _guarded(f"image ({decoder})", decoder, lambda: getattr(image, decoder)(blob))


# ---------------------------------------------------------------------- tokenizer folders


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "a"]


def _tokenizer_folder() -> dict:
    from ember.text import BertTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab = os.path.join(folder, "vocab.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(VOCAB) + "\n")
        out = os.path.join(folder, "tok")
        BertTokenizer(vocab_file=vocab).save_pretrained(out)
        files = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name), "rb") as f:
                files[name] = f.read()
    return files


pytest.importorskip("tokenizers", reason="the tokenizer engine")
TOKENIZER_FILES = _tokenizer_folder()
_JSON_FILES = [n for n in sorted(TOKENIZER_FILES) if n.endswith(".json")]


def _load_tokenizer(folder):
    from ember.text import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer("hello worlds", truncation=True, max_length=8)


@FUZZ
@given(name=st.sampled_from(sorted(TOKENIZER_FILES)), data=st.data())
def test_fuzz_tokenizer_files(tmp_path, name, data):
    folder = tmp_path / f"tok-{os.urandom(4).hex()}"
    folder.mkdir()
    for file, content in TOKENIZER_FILES.items():
        (folder / file).write_bytes(content)
    (folder / name).write_bytes(data.draw(mutated(TOKENIZER_FILES[name])))
    _guarded("tokenizer (bytes)", str(folder), lambda: _load_tokenizer(str(folder)))


@FUZZ
@given(
    name=st.sampled_from([n for n in _JSON_FILES if n != "tokenizer.json"]),
    key=st.sampled_from(
        [
            "additional_special_tokens",
            "unk_token",
            "pad_token",
            "model_max_length",
            "padding_side",
            "do_lower_case",
            "tokenizer_class",
            "clean_up_tokenization_spaces",
        ]
    ),
    value=_HOSTILE_VALUES,
)
def test_fuzz_tokenizer_config_fields(tmp_path, name, key, value):
    folder = tmp_path / f"tok-{os.urandom(4).hex()}"
    folder.mkdir()
    for file, content in TOKENIZER_FILES.items():
        (folder / file).write_bytes(content)
    config = json.loads(TOKENIZER_FILES[name])
    config[key] = value
    (folder / name).write_text(json.dumps(config))
    _guarded("tokenizer (fields)", str(folder), lambda: _load_tokenizer(str(folder)))


# ---------------------------------------------------------------------- config.json


def _model_folder() -> dict:
    from ember.transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    with tempfile.TemporaryDirectory() as folder:
        BertModel(config).save_pretrained(folder)
        return {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}


MODEL_FILES = _model_folder()
_CONFIG_KEYS = sorted(json.loads(MODEL_FILES["config.json"]))


def _load_model(folder):
    from ember.transformers import AutoModel

    AutoModel.from_pretrained(folder)


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(_CONFIG_KEYS + ["torch_dtype", "dtype"]), _HOSTILE_VALUES, max_size=3
    )
)
def test_fuzz_config_json_fields(tmp_path, fields):
    folder = tmp_path / f"m-{os.urandom(4).hex()}"
    folder.mkdir()
    for file, content in MODEL_FILES.items():
        (folder / file).write_bytes(content)
    config = json.loads(MODEL_FILES["config.json"])
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    allowed = (ValueError, OSError, RuntimeError, MemoryError)
    # A config field may honestly describe a bigger model than the checkpoint holds (the case
    # vocab_size=2091164 with hidden_size 8 asks for a 67 MB embedding, built before the loader
    # finds the checkpoint's 20 rows and refuses the mismatch): the bound here is on that model
    # plus the reader's own overhead, so 4x the readers' bound; absurd sizes end in MemoryError.
    load = lambda: _load_model(str(folder))  # noqa: E731
    _guarded("config.json (fields)", str(folder), load, allowed, max_peak=4 * MAX_PEAK_BYTES)


@FUZZ
@given(data=mutated(MODEL_FILES["config.json"]))
def test_fuzz_config_json_bytes(tmp_path, data):
    folder = tmp_path / f"m-{os.urandom(4).hex()}"
    folder.mkdir()
    for file, content in MODEL_FILES.items():
        (folder / file).write_bytes(content)
    (folder / "config.json").write_bytes(data)
    allowed = (ValueError, OSError, RuntimeError)
    _guarded("config.json (bytes)", str(folder), lambda: _load_model(str(folder)), allowed)
