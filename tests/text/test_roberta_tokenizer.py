"""RobertaTokenizer from the slow-format files (vocab.json + merges.txt, no tokenizer.json)
against HuggingFace transformers' RobertaTokenizer on the same folders: ids, attention masks,
special-token masks, offsets, pairs, decodes and special tokens, on varied text (unicode,
leading and repeated spaces, <mask> with and without lstrip). The BPE is trained here with the
`tokenizers` library and saved in both formats, so the fast (tokenizer.json) folder is a
second reference for the slow one."""

from __future__ import annotations

import json
import os

import pytest

from ember.text import AutoTokenizer, RobertaTokenizer

pytest.importorskip("tokenizers")

TEXTS = [
    "the cat sat on the <mask>",
    "a <mask>dog ate my homework",
    " leading space",
    "  two  spaces\tand\nnewline\r\n",
    "naïve café über straße Ångström",
    "日本語 テキスト 😀👍🏽 family 👨‍👩‍👧",
    "<s>weird</s> tokens <pad> and <unk> inside",
    "don't stop-believing; it's 3.14 (yes) Hello , world .",
    "",
    "unseen words: zyxw qqq ÿ\x00\x07",
]
PAIRS = [(TEXTS[i], TEXTS[(i * 3 + 1) % len(TEXTS)]) for i in range(len(TEXTS))]
KEYS = ("input_ids", "attention_mask", "special_tokens_mask", "offset_mapping")
MASK_LSTRIP = {
    "content": "<mask>",
    "lstrip": True,
    "rstrip": False,
    "normalized": False,
    "single_word": False,
    "special": True,
}


def _train(folder):
    """A byte-level BPE (RoBERTa's layout: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last)
    saved as tokenizer.json in folder/fast and as vocab.json + merges.txt in folder/slow*."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    engine = tokenizers.Tokenizer(models.BPE())
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    engine.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    engine.train_from_iterator(
        [
            "the cat sat on the mat",
            "a dog ate my homework",
            "naïve café über straße",
            "日本語 テキスト 😀",
            "the quick brown fox jumps over the lazy dog",
        ]
        * 20,
        trainer,
    )
    engine.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    engine.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    config = {"tokenizer_class": "RobertaTokenizer", "model_max_length": 64}
    folders = {}
    for name in ("fast", "slow", "slow-special-map", "slow-added-tokens"):
        path = os.path.join(folder, name)
        os.makedirs(path)
        folders[name] = path
        extra = {}
        if name == "fast":
            engine.save(os.path.join(path, "tokenizer.json"))
        else:
            engine.model.save(path)  # vocab.json + merges.txt
            vocab_path = os.path.join(path, "vocab.json")
            with open(vocab_path, encoding="utf-8") as file:
                vocab = json.load(file)
            vocab["<mask>"] = len(vocab)  # as roberta-base's vocab.json lists it
            with open(vocab_path, "w", encoding="utf-8") as file:
                json.dump(vocab, file, ensure_ascii=False)
        if name == "slow-special-map":
            with open(os.path.join(path, "special_tokens_map.json"), "w") as file:
                json.dump(
                    {"bos_token": "<s>", "eos_token": "</s>", "mask_token": MASK_LSTRIP}, file
                )
        if name == "slow-added-tokens":  # roberta-base's tokenizer_config.json layout
            tokens = ["<s>", "<pad>", "</s>", "<unk>"]
            extra["added_tokens_decoder"] = {
                str(i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": True,
                    "rstrip": False,
                    "single_word": False,
                    "special": True,
                }
                for i, t in enumerate(tokens)
            }
            extra["added_tokens_decoder"][str(engine.token_to_id("<mask>"))] = MASK_LSTRIP
        with open(os.path.join(path, "tokenizer_config.json"), "w") as file:
            json.dump({**config, **extra}, file)
    return folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return _train(str(tmp_path_factory.mktemp("roberta-bpe")))


def _compare(ours, theirs, inputs, **kwargs):
    kwargs = {"return_offsets_mapping": True, "return_special_tokens_mask": True, **kwargs}
    got, want = ours(*inputs, **kwargs), theirs(*inputs, **kwargs)
    assert set(got.keys()) == set(want.keys()), (got.keys(), want.keys())
    for key in KEYS:
        assert got[key] == want[key], (key, inputs)
    return want


@pytest.mark.parametrize("name", ["slow", "slow-special-map", "slow-added-tokens"])
def test_slow_format_folder_matches_huggingface(folders, hf_transformers, name):
    ours = RobertaTokenizer.from_pretrained(folders[name])
    theirs = hf_transformers.RobertaTokenizer.from_pretrained(folders[name])
    assert type(AutoTokenizer.from_pretrained(folders[name])) is RobertaTokenizer
    assert not os.path.exists(os.path.join(folders[name], "tokenizer.json"))
    assert ours.vocab_size == theirs.vocab_size and len(ours) == len(theirs)
    assert ours.get_vocab() == theirs.get_vocab()
    for attribute in (
        "bos_token",
        "eos_token",
        "sep_token",
        "cls_token",
        "unk_token",
        "pad_token",
        "mask_token",
    ):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
        assert getattr(ours, attribute + "_id") == getattr(theirs, attribute + "_id"), attribute
    assert ours.all_special_ids == theirs.all_special_ids
    want = _compare(ours, theirs, (TEXTS,))
    _compare(ours, theirs, ([a for a, _ in PAIRS], [b for _, b in PAIRS]))
    _compare(ours, theirs, (TEXTS,), padding="max_length", truncation=True, max_length=12)
    for ids in want["input_ids"]:
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                ids, skip_special_tokens=skip
            ), (ids, skip)
    # <mask> strips the space on its left exactly when the folder's config says so
    ids = ours("the <mask>")["input_ids"]  # <s> the [Ġ] <mask> </s>
    assert ids[-2] == theirs.mask_token_id and (len(ids) == 4) is (name != "slow")
    print(
        f"{name}: {len(TEXTS)} texts and {len(PAIRS)} pairs: ids, masks, offsets and decodes "
        f"equal to HuggingFace's"
    )


def test_slow_folder_with_mask_lstrip_equals_the_fast_folder(folders, hf_transformers):
    """The same BPE from tokenizer.json and from vocab.json + merges.txt tokenizes alike."""
    slow = RobertaTokenizer.from_pretrained(folders["slow-special-map"])
    fast = RobertaTokenizer.from_pretrained(folders["fast"])
    _compare(slow, fast, (TEXTS,))
    _compare(slow, fast, ([a for a, _ in PAIRS], [b for _, b in PAIRS]))


def test_add_prefix_space_and_trim_offsets_options(folders, hf_transformers):
    for options in (
        {"add_prefix_space": True},
        {"trim_offsets": False},
        {"add_prefix_space": True, "trim_offsets": False},
    ):
        ours = RobertaTokenizer.from_pretrained(folders["slow"], **options)
        theirs = hf_transformers.RobertaTokenizer.from_pretrained(folders["slow"], **options)
        _compare(ours, theirs, (TEXTS,))
    ours = RobertaTokenizer.from_pretrained(folders["slow"], add_prefix_space=True)
    assert ours("cat")["input_ids"] == ours(" cat")["input_ids"]


def test_constructor_from_files_and_save_pretrained_round_trip(folders, hf_transformers, tmp_path):
    slow = folders["slow-special-map"]
    ours = RobertaTokenizer(
        os.path.join(slow, "vocab.json"), os.path.join(slow, "merges.txt"), mask_token=MASK_LSTRIP
    )
    theirs = hf_transformers.RobertaTokenizer.from_pretrained(slow)
    _compare(ours, theirs, (TEXTS,))
    saved = str(tmp_path / "saved")
    ours.save_pretrained(saved)
    again = hf_transformers.AutoTokenizer.from_pretrained(saved)
    _compare(ours, again, (TEXTS,))
    assert RobertaTokenizer.from_pretrained(saved)(TEXTS)["input_ids"] == ours(TEXTS)["input_ids"]


def test_bad_slow_format_files_are_clear_errors(folders, tmp_path):
    bare = tmp_path / "only-vocab"
    bare.mkdir()
    with open(os.path.join(folders["slow"], "vocab.json"), encoding="utf-8") as file:
        vocab = file.read()
    (bare / "vocab.json").write_text(vocab, encoding="utf-8")
    with pytest.raises(
        FileNotFoundError,
        match=r"neither tokenizer.json nor vocab.json with "
        r"merges.txt; found \['vocab.json'\]",
    ):
        RobertaTokenizer.from_pretrained(str(bare))
    (bare / "merges.txt").write_text("#version: 0.2\nt h e\n", encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=r"line 2 of .*merges.txt.* two tokens separated by one "
        r"space, got 't h e'",
    ):
        RobertaTokenizer.from_pretrained(str(bare))
    (bare / "merges.txt").write_text("#version: 0.2\nzz qq\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"RobertaTokenizer \(.*merges.txt.*\): cannot build byte-level BPE"
    ):
        RobertaTokenizer.from_pretrained(str(bare))
    with pytest.raises(ValueError, match="needs both vocab_file and merges_file"):
        RobertaTokenizer(vocab_file=str(bare / "vocab.json"))
