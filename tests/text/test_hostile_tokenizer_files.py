"""Malformed tokenizer folders (issue 19, items 8 and 11): refused with errors naming the
file and the field, never a silently different tokenization."""

import json

import pytest

from ember.text import AutoTokenizer, BertTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "a", "b", "c"]


@pytest.fixture
def folder(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(str(tmp_path / "tok"))
    return tmp_path / "tok"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"additional_special_tokens": "abc"}, "'additional_special_tokens' should be a list"),
        ({"additional_special_tokens": [1, 2]}, "'additional_special_tokens' should be a list"),
        ({"unk_token": 5}, "'unk_token' should be a string or an AddedToken"),
        ({"mask_token": {"lstrip": True}}, "'mask_token' should be a string or an AddedToken"),
    ],
)
@pytest.mark.parametrize("file", ["special_tokens_map.json", "tokenizer_config.json"])
def test_malformed_special_tokens_are_refused_naming_file_and_field(folder, fields, message, file):
    path = folder / file
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    for loader in (BertTokenizer.from_pretrained, AutoTokenizer.from_pretrained):
        with pytest.raises(ValueError, match=file) as info:
            loader(str(folder))
        assert message in str(info.value)


def test_well_formed_added_token_objects_still_load(folder):
    path = folder / "special_tokens_map.json"
    data = json.loads(path.read_text())
    data["additional_special_tokens"] = [{"content": "[X]", "lstrip": False}, "[Y]"]
    path.write_text(json.dumps(data))
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    assert tokenizer.additional_special_tokens == ["[X]", "[Y]"]


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("tokenizer.json", b"{not json", "tokenizer.json' is not a valid tokenizer.json"),
        ("tokenizer.json", b'{"version": "\xff"}', "tokenizer.json' is not valid UTF-8"),
        ("tokenizer_config.json", b"[1, 2]", "tokenizer_config.json' holds a list"),
        ("special_tokens_map.json", b"\xff\xfe", "special_tokens_map.json' is not valid UTF-8"),
    ],
)
def test_damaged_files_are_named(folder, file, content, message):
    (folder / file).write_bytes(content)
    with pytest.raises(ValueError) as info:
        BertTokenizer.from_pretrained(str(folder))
    assert message in str(info.value)


def test_non_utf8_vocab_txt_is_named(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="vocab.txt' is not valid UTF-8"):
        BertTokenizer(vocab_file=str(vocab))
