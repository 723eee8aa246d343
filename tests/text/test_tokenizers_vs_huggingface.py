"""ember.text tokenizers against HuggingFace transformers on the MiniLM folder: same ids,
masks, type ids, offsets, special-token masks, decodes, for every padding and truncation mode."""

import json
import os
import shutil

import numpy as np
import pytest

from ember.text import AutoTokenizer, BatchEncoding, BertTokenizer, BertTokenizerFast

pytest.importorskip("tokenizers")

CORPUS = [
    "Hello, my dog is cute",
    "Héllo wörld! Ça va? Ñandú, naïve café, Ångström, ÉCOLE",
    "北京是中国的首都。東京は日本の首都です。서울은 한국의 수도입니다.",
    "Emoji 😀👍🏽 and flags 🇫🇷 with ZWJ 👨‍👩‍👧 family",
    "control\x00chars\x07 here\tand\nnewlines\r\nand\x1bescape \ufffd replacement",
    "  leading and trailing spaces   ",
    "",
    "don't stop-believing; it's 3.14 or 1,000,000 (yes) [brackets] {braces} #hash @at",
    "[MASK] is special, [CLS] too, but [mask] and [cls] are lowercase",
    "Arabic: مرحبا بالعالم and Hindi: नमस्ते दुनिया and Greek: Καλημέρα κόσμε",
    "zero\u200bwidth\u00a0nbsp\u2028line separator\u3000ideographic space",
    "combining e\u0301 a\u0308 vs precomposed é ä",
    "supercalifragilisticexpialidocious " + "x" * 120 + " antidisestablishmentarianism",
    "UPPER lower MiXeD CaSe",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 60),  # long: > 512 tokens
]
PAIRS = [(CORPUS[i], CORPUS[(i * 7 + 3) % len(CORPUS)]) for i in range(len(CORPUS))]
KEYS = ["input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping"]


def _same(ours: BatchEncoding, theirs, context):
    assert isinstance(ours, BatchEncoding)
    assert list(ours.keys()) == list(theirs.keys()), context
    for key in theirs:
        a, b = ours[key], theirs[key]
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype, (context, key)
            if b.dtype == object:  # a ragged batch: one array per row
                assert len(a) == len(b), (context, key)
                for row_a, row_b in zip(a, b):
                    np.testing.assert_array_equal(row_a, row_b, err_msg=f"{context} {key}")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{context} {key}")
        else:
            assert a == b, (context, key)


@pytest.fixture(scope="module")
def pair_of_tokenizers(minilm, hf_transformers):
    return AutoTokenizer.from_pretrained(minilm), hf_transformers.AutoTokenizer.from_pretrained(
        minilm
    )


def _call_both(ours, theirs, *args, **kwargs):
    try:
        expected = theirs(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the same inputs must fail in ember too
        with pytest.raises((ValueError, TypeError)):
            ours(*args, **kwargs)
        return type(error).__name__
    _same(ours(*args, **kwargs), expected, (args[:1], kwargs))
    return expected


def test_class_and_basic_attributes(pair_of_tokenizers):
    ours, theirs = pair_of_tokenizers
    assert isinstance(ours, BertTokenizer) and BertTokenizerFast is BertTokenizer
    assert ours.vocab_size == theirs.vocab_size and len(ours) == len(theirs)
    assert ours.model_max_length == theirs.model_max_length == 512
    for name in (
        "cls_token",
        "sep_token",
        "pad_token",
        "unk_token",
        "mask_token",
        "cls_token_id",
        "sep_token_id",
        "pad_token_id",
        "unk_token_id",
        "mask_token_id",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.bos_token is None and ours.bos_token_id is None
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.num_special_tokens_to_add(pair=True) == 3


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_single_texts(pair_of_tokenizers, text):
    ours, theirs = pair_of_tokenizers
    flags = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    _call_both(ours, theirs, text, **flags)
    _call_both(ours, theirs, text, truncation=True, **flags)
    _call_both(ours, theirs, text, max_length=16, **flags)
    _call_both(ours, theirs, text, padding="max_length", max_length=24, truncation=True, **flags)
    assert ours.tokenize(text) == theirs.tokenize(text)
    ids = theirs(text)["input_ids"]
    for skip in (False, True):
        for clean in (None, False, True):
            assert ours.decode(
                ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean
            ) == theirs.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    tokens = theirs.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)


@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first", "only_second", False])
@pytest.mark.parametrize("max_length", [None, 9, 40, 300])
def test_pairs_every_truncation_strategy(pair_of_tokenizers, strategy, max_length):
    ours, theirs = pair_of_tokenizers
    flags = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for first, second in PAIRS:
        _call_both(ours, theirs, first, second, truncation=strategy, max_length=max_length, **flags)
    # whole batches of pairs, both spellings
    firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    _call_both(
        ours,
        theirs,
        firsts,
        seconds,
        truncation=strategy,
        max_length=max_length,
        padding=True,
        **flags,
    )
    _call_both(
        ours,
        theirs,
        [list(p) for p in PAIRS],
        truncation=strategy,
        max_length=max_length,
        padding=True,
        return_tensors="np",
    )


@pytest.mark.parametrize("padding", [True, "longest", "max_length", False, "do_not_pad"])
@pytest.mark.parametrize("truncation", [True, False, "longest_first"])
@pytest.mark.parametrize("return_tensors", [None, "np"])
def test_batches_every_padding_mode(pair_of_tokenizers, padding, truncation, return_tensors):
    ours, theirs = pair_of_tokenizers
    flags = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
    for max_length in (None, 20):
        _call_both(
            ours,
            theirs,
            CORPUS,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
            **flags,
        )
        _call_both(
            ours,
            theirs,
            CORPUS[:3],
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            pad_to_multiple_of=8,
            return_tensors=return_tensors,
            **flags,
        )


def test_options_and_sides(pair_of_tokenizers):
    ours, theirs = pair_of_tokenizers
    texts = CORPUS[:4]
    _call_both(
        ours, theirs, texts, padding=True, return_attention_mask=False, return_token_type_ids=False
    )
    _call_both(ours, theirs, texts, padding=True, padding_side="left", return_tensors="np")
    _call_both(ours, theirs, texts, add_special_tokens=False, padding=True)
    _call_both(
        ours,
        theirs,
        CORPUS[-1],
        truncation=True,
        max_length=32,
        stride=4,
        return_overflowing_tokens=True,
    )
    words = [["Hello", "wörld", "!"], ["北京", "is", "big"]]
    _call_both(
        ours, theirs, words, is_split_into_words=True, padding=True, return_offsets_mapping=True
    )
    _call_both(ours, theirs, words[0], is_split_into_words=True)
    encoded = ours(texts, padding=True)
    reference = theirs(texts, padding=True)
    for i in range(len(texts)):
        assert encoded.word_ids(i) == reference.word_ids(i)
        assert encoded.tokens(i) == reference.tokens(i)
        assert encoded.sequence_ids(i) == reference.sequence_ids(i)


def test_tensors_must_be_rectangular(pair_of_tokenizers):
    ours, _ = pair_of_tokenizers
    with pytest.raises(ValueError, match="different lengths.*padding=True"):
        ours(["a b c", "a"], return_tensors="ember")
    with pytest.raises(ValueError, match="padding should be"):
        ours("a", padding="sideways")
    with pytest.raises(ValueError, match="truncation should be"):
        ours("a", truncation="middle")
    with pytest.raises(TypeError, match="each text should be a str, got int"):
        ours([1, 2])
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['bogus'\]"):
        ours("a", bogus=1)


def test_batch_decode_and_pad(pair_of_tokenizers):
    ours, theirs = pair_of_tokenizers
    batch = theirs(CORPUS[:5], padding=True, return_tensors="np")["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == theirs.batch_decode(
            batch, skip_special_tokens=skip
        )
    features = [ours(t, truncation=True, max_length=12) for t in CORPUS[:4]]
    ours_padded = ours.pad([dict(f) for f in features], return_tensors="np")
    theirs_padded = theirs.pad([dict(f) for f in features], return_tensors="np")
    _same(ours_padded, theirs_padded, "pad")
    _same(
        ours.pad([dict(f) for f in features], padding="max_length", max_length=16),
        theirs.pad([dict(f) for f in features], padding="max_length", max_length=16),
        "pad16",
    )


def test_special_token_helpers(pair_of_tokenizers):
    # transformers 5 dropped these from its fast tokenizers; the collators (NSP pairs) use them
    ours, theirs = pair_of_tokenizers
    a, b = [7592, 2088], [7632]
    with_pair = theirs.decode([101, *a, 102, *b, 102])
    assert ours.build_inputs_with_special_tokens(a, b) == [101, *a, 102, *b, 102]
    assert ours.decode(ours.build_inputs_with_special_tokens(a, b)) == with_pair
    assert ours.build_inputs_with_special_tokens(a) == [101, *a, 102]
    assert ours.get_special_tokens_mask(a, b) == [1, 0, 0, 1, 0, 1]
    assert ours.get_special_tokens_mask([101, *a, 102], already_has_special_tokens=True) == [
        1,
        0,
        0,
        1,
    ]
    assert ours.create_token_type_ids_from_sequences(a, b) == [0, 0, 0, 0, 1, 1]
    assert ours("hello world", "hi")["input_ids"] == ours.build_inputs_with_special_tokens(a, b)


def test_vocab_txt_only_folder(minilm, hf_transformers, tmp_path):
    """A folder with only vocab.txt builds the BERT pipeline from it, equal to HF's."""
    shutil.copy(os.path.join(minilm, "vocab.txt"), tmp_path / "vocab.txt")
    ours = AutoTokenizer.from_pretrained(tmp_path)
    theirs = hf_transformers.BertTokenizer.from_pretrained(str(tmp_path))
    assert type(ours) is BertTokenizer
    flags = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for text in CORPUS:
        _call_both(ours, theirs, text, **flags)
    _call_both(
        ours,
        theirs,
        CORPUS,
        [p[1] for p in PAIRS],
        padding=True,
        truncation=True,
        max_length=64,
        **flags,
    )
    assert ours.decode(theirs(CORPUS[1])["input_ids"]) == theirs.decode(
        theirs(CORPUS[1])["input_ids"]
    )
    # with the config files too, and an option overriding the folder's
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm, name), tmp_path / name)
    for kwargs in ({}, {"do_lower_case": False}):
        ours = BertTokenizer.from_pretrained(tmp_path, **kwargs)
        theirs = hf_transformers.BertTokenizer.from_pretrained(str(tmp_path), **kwargs)
        assert ours.model_max_length == 512
        _call_both(ours, theirs, CORPUS, padding=True, truncation=True, **flags)


def test_do_lower_case_override_on_tokenizer_json(minilm, hf_transformers):
    ours = AutoTokenizer.from_pretrained(minilm, do_lower_case=False)
    theirs = hf_transformers.AutoTokenizer.from_pretrained(minilm, do_lower_case=False)
    _call_both(ours, theirs, CORPUS, padding=True, truncation=True)


def test_save_pretrained_loads_in_huggingface(pair_of_tokenizers, hf_transformers, tmp_path):
    ours, theirs = pair_of_tokenizers
    written = ours.save_pretrained(tmp_path)
    names = sorted(os.path.basename(p) for p in written)
    assert names == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["model_max_length"] == 512
    reloaded_hf = hf_transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    reloaded_ours = AutoTokenizer.from_pretrained(tmp_path)
    flags = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    expected = theirs(CORPUS, padding=True, truncation=True, **flags)
    _same(reloaded_ours(CORPUS, padding=True, truncation=True, **flags), expected, "reloaded")
    assert dict(reloaded_hf(CORPUS, padding=True, truncation=True, **flags)) == dict(expected)
    assert reloaded_ours.model_max_length == reloaded_hf.model_max_length == 512
    _same(
        reloaded_ours(CORPUS, padding=True, truncation=True, **flags),
        reloaded_hf(CORPUS, padding=True, truncation=True, **flags),
        "hf reload",
    )
    # vocab.txt alone also round-trips
    os.remove(tmp_path / "tokenizer.json")
    _same(
        AutoTokenizer.from_pretrained(tmp_path)(CORPUS, padding=True),
        theirs(CORPUS, padding=True),
        "vocab only after save",
    )


def test_added_tokens(minilm, hf_transformers):
    ours = AutoTokenizer.from_pretrained(minilm)
    theirs = hf_transformers.AutoTokenizer.from_pretrained(minilm)
    assert ours.add_tokens(["newword", "[NEW]"]) == theirs.add_tokens(["newword", "[NEW]"])
    assert ours.add_special_tokens({"additional_special_tokens": ["<ent>"]}) == 1
    theirs.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    text = "a newword and [NEW] with <ent> inside"
    _call_both(ours, theirs, text, return_special_tokens_mask=True)
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == theirs.decode(
        theirs(text)["input_ids"], skip_special_tokens=True
    )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="ember never downloads"):
        AutoTokenizer.from_pretrained("no-such-model-anywhere-xyz")
    with pytest.raises(ValueError, match="cannot tell which tokenizer"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="use AutoTokenizer.from_pretrained"):
        AutoTokenizer()


def test_batch_encoding_behaves_like_a_dict(pair_of_tokenizers):
    import pickle

    ours, _ = pair_of_tokenizers
    encoding = ours(["hello world", "hi"], padding=True, return_tensors="np")
    assert encoding.input_ids is encoding["input_ids"]
    assert encoding.to("cpu") is encoding
    assert dict(**encoding).keys() == encoding.keys()
    with pytest.raises(AttributeError, match="has no key 'labels'"):
        _ = encoding.labels
    clone = pickle.loads(pickle.dumps(encoding))
    np.testing.assert_array_equal(clone["input_ids"], encoding["input_ids"])
    assert clone.tokens(1) == ["[CLS]", "hi", "[SEP]", "[PAD]"]


@pytest.mark.parametrize("name", ["ember", "pt"])
def test_return_tensors_ember(pair_of_tokenizers, name):
    import ember

    ours, theirs = pair_of_tokenizers
    encoding = ours(
        CORPUS[:3],
        CORPUS[3:6],
        padding=True,
        truncation=True,
        max_length=32,
        return_tensors=name,
        return_offsets_mapping=True,
    )
    reference = theirs(
        CORPUS[:3],
        CORPUS[3:6],
        padding=True,
        truncation=True,
        max_length=32,
        return_tensors="np",
        return_offsets_mapping=True,
    )
    for key in reference:
        assert isinstance(encoding[key], ember.Tensor) and encoding[key].dtype == ember.int64
        np.testing.assert_array_equal(encoding[key].numpy(), reference[key])
    assert encoding.to("cpu")["input_ids"].shape == (3, 32)
    single = ours("Hello, my dog is cute", return_tensors=name)
    assert single["input_ids"].shape == (1, 8)
    assert ours.decode(single["input_ids"][0]) == "[CLS] hello, my dog is cute [SEP]"
    assert ours.batch_decode(
        encoding["input_ids"], skip_special_tokens=True
    ) == theirs.batch_decode(reference["input_ids"], skip_special_tokens=True)
