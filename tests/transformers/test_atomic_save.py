"""save_pretrained and tokenizer saving are atomic per folder (issue 19, item 9): a kill -9 at
any instant leaves a folder that loads, with weights and config from the same save."""

import json
import os
import random
import signal
import time

import numpy as np
import pytest

import ember
from ember.io import atomic_folder, atomic_write, load_file, recover_folder
from ember.io.atomic import JOURNAL_NAME
from ember.transformers import BertConfig, BertModel, GenerationConfig

KILL_POINTS = 36


def _tiny_model():
    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    return BertModel(config)


def _save_generation(model, folder, generation):
    with ember.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float(generation))
    model.config.generation = generation
    model.save_pretrained(folder)


def _check_consistent(folder):
    """The folder loads, and every weight holds the generation its config.json names."""
    loaded = BertModel.from_pretrained(folder)  # recovers the folder first
    generation = loaded.config.generation
    weights = load_file(os.path.join(folder, "model.safetensors"), framework="np")
    assert all(np.all(w == generation) for w in weights.values()), generation
    leftovers = [n for n in os.listdir(folder) if n.startswith(".")]
    assert leftovers == [], leftovers  # temporaries of the dead writer are gone
    return generation


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill loop forks a writer process")
def test_kill_9_loop_over_save_pretrained_always_leaves_a_loadable_folder(tmp_path, capsys):
    folder = str(tmp_path / "model")
    model = _tiny_model()
    _save_generation(model, folder, 0)
    rng = random.Random(0)
    seen = set()
    rolled_forward = 0
    next_generation = 1
    for _ in range(KILL_POINTS):
        start = next_generation
        next_generation += 1000
        pid = os.fork()
        if pid == 0:  # the writer: saves new generations until killed
            try:
                generation = start
                while True:
                    _save_generation(model, folder, generation)
                    generation += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rolled_forward += os.path.exists(os.path.join(folder, JOURNAL_NAME))
        seen.add(_check_consistent(folder))
    with capsys.disabled():
        print(
            f"\nsave_pretrained kill -9 loop: {KILL_POINTS} kills, {len(seen)} distinct "
            f"generations seen, {rolled_forward} journals rolled forward"
        )
    assert len(seen) > 1  # the writer did get saves through between kills


def test_a_committed_journal_is_rolled_forward_and_uncommitted_temporaries_dropped(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "a.txt").write_text("old-a")
    (folder / "b.txt").write_text("old-b")
    dead = 2**22 + 4321  # above the default pid_max: no such process
    # A writer that committed (journal written) and died before its renames:
    (folder / f".a.txt.tmp-{dead}-0000aaaa").write_text("new-a")
    (folder / f".b.txt.tmp-{dead}-0000bbbb").write_text("new-b")
    journal = {
        "pid": dead,
        "renames": [
            [f".a.txt.tmp-{dead}-0000aaaa", "a.txt"],
            [f".b.txt.tmp-{dead}-0000bbbb", "b.txt"],
        ],
    }
    (folder / JOURNAL_NAME).write_text(json.dumps(journal))
    # ... and another that died before committing:
    (folder / f".a.txt.tmp-{dead + 1}-0000cccc").write_text("half")
    recover_folder(folder)
    assert sorted(os.listdir(folder)) == ["a.txt", "b.txt"]
    assert (folder / "a.txt").read_text() == "new-a" and (folder / "b.txt").read_text() == "new-b"


def test_an_error_inside_a_folder_transaction_changes_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path):
            with atomic_write(tmp_path / "a.txt", "w") as f:
                f.write("new")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_tokenizer_save_is_one_transaction(tmp_path, monkeypatch):
    from ember.text import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    out = tmp_path / "out"
    tokenizer.save_pretrained(str(out))
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    # A failure half-way (the third file) leaves the first two unchanged.
    calls = []
    real_dump = json.dump

    def failing_dump(value, file, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_dump(value, file, **kwargs)

    monkeypatch.setattr(json, "dump", failing_dump)
    tokenizer.add_tokens(["zzz"])
    with pytest.raises(OSError):
        tokenizer.save_pretrained(str(out))
    monkeypatch.undo()
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before


SAVERS = [  # (name, what to save): every save_pretrained refuses a path that is a file
    ("BertConfig", lambda: _tiny_model().config),
    ("BertModel", _tiny_model),
    ("GenerationConfig", GenerationConfig),
]


@pytest.mark.parametrize("name,make", SAVERS, ids=[s[0] for s in SAVERS])
def test_save_pretrained_into_a_file_path_names_the_saver(tmp_path, name, make):
    path = tmp_path / "a-file"
    path.write_text("keep me")
    with pytest.raises(NotADirectoryError, match=rf"{name}.save_pretrained: .*is a file"):
        make().save_pretrained(path)
    assert path.read_text() == "keep me"
