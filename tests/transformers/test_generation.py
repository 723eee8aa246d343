"""`generate()` against HuggingFace transformers on tiny random GPT-2 and Llama checkpoints:
greedy and beam-search ids equal HF's over 20 new tokens (with and without left padding, with
and without the cache), EOS/pad handling, penalties and n-gram blocking, the processors one by
one, `generation_config.json`, streamers, the text-generation pipeline; sampling is
reproducible with a seed and draws from the filtered distribution (a statistical test)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import ember
from ember import transformers as et

pytestmark = pytest.mark.usefixtures("torch_one_thread")

KINDS = ["gpt2", "llama"]


def _generate_both(hf_model, model, ids, mask, **kwargs):
    import torch

    with torch.no_grad():
        ref = hf_model.generate(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kwargs
        )
    got = model.generate(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask), **kwargs)
    return got, ref


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("kind", KINDS)
def test_ids_match_huggingface(tiny_decoder, decoder_prompts, kind, padded, num_beams, use_cache):
    hf_model, folder = tiny_decoder(kind)
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(padded)
    got, ref = _generate_both(
        hf_model,
        model,
        ids,
        mask,
        max_new_tokens=20,
        num_beams=num_beams,
        do_sample=False,
        use_cache=use_cache,
    )
    assert tuple(got.shape) == tuple(ref.shape) == (3, 27)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_cache_on_equals_cache_off(tiny_decoder, decoder_prompts, kind):
    _, folder = tiny_decoder(kind)
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(True)
    outs = [
        model.generate(
            ember.from_numpy(ids),
            attention_mask=ember.from_numpy(mask),
            max_new_tokens=20,
            use_cache=use_cache,
            return_dict_in_generate=True,
            output_scores=True,
        )
        for use_cache in (True, False)
    ]
    np.testing.assert_array_equal(outs[0].sequences.numpy(), outs[1].sequences.numpy())
    for a, b in zip(outs[0].scores, outs[1].scores):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def _eos_seen_midway(hf_model, ids, mask) -> int:
    """A token HF's greedy continuation of row 0 emits at step 5 (to use as EOS)."""
    import torch

    with torch.no_grad():
        out = hf_model.generate(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=8
        )
    return int(out[0, ids.shape[1] + 5])


SETTINGS = {
    "eos-list": dict(max_new_tokens=20),
    "repetition-penalty": dict(max_new_tokens=20, repetition_penalty=1.8),
    "no-repeat-2gram": dict(max_new_tokens=20, no_repeat_ngram_size=2),
    "min-new-tokens": dict(max_new_tokens=12, min_new_tokens=10),
    "beam-length-penalty-early": dict(
        max_new_tokens=15, num_beams=4, length_penalty=0.5, early_stopping=True
    ),
    "beam-never-returns-2": dict(
        max_new_tokens=15,
        num_beams=4,
        length_penalty=2.0,
        early_stopping="never",
        num_return_sequences=2,
    ),
    "beam-heuristic-ngram": dict(max_new_tokens=15, num_beams=3, no_repeat_ngram_size=3),
    "max-length": dict(max_length=12),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_settings_match_huggingface(tiny_decoder, decoder_prompts, kind, setting):
    """Each row with an EOS id that the continuations hit midway, so EOS and pad handling
    (finished rows get pad, beams finish early) is exercised with every setting."""
    hf_model, folder = tiny_decoder(kind)
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(True)
    eos = [_eos_seen_midway(hf_model, ids, mask), 2]
    got, ref = _generate_both(
        hf_model, model, ids, mask, eos_token_id=eos, pad_token_id=0, **SETTINGS[setting]
    )
    assert tuple(got.shape) == tuple(ref.shape), (got.shape, ref.shape)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())
    if setting == "eos-list":  # row 0 stopped at its EOS; the row is padded after it
        row = got.numpy()[0, ids.shape[1] :]
        stop = list(row).index(eos[0])
        assert stop < 8 and (row[stop + 1 :] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_beam_scores_match_huggingface(tiny_decoder, decoder_prompts, kind):
    import torch

    hf_model, folder = tiny_decoder(kind)
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(True)
    kwargs = dict(
        max_new_tokens=10,
        num_beams=3,
        num_return_sequences=3,
        return_dict_in_generate=True,
        output_scores=True,
    )
    with torch.no_grad():
        ref = hf_model.generate(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kwargs
        )
    got = model.generate(ember.from_numpy(ids), attention_mask=ember.from_numpy(mask), **kwargs)
    np.testing.assert_array_equal(got.sequences.numpy(), ref.sequences.numpy())
    np.testing.assert_allclose(
        got.sequences_scores.numpy(), ref.sequences_scores.numpy(), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(got.beam_indices.numpy(), ref.beam_indices.numpy())


# --------------------------------------------------------------------------- processors
PROCESSORS = [
    ("TemperatureLogitsWarper", (0.7,), {}),
    ("TopKLogitsWarper", (5,), {}),
    ("TopKLogitsWarper", (3,), {"min_tokens_to_keep": 4}),
    ("TopPLogitsWarper", (0.8,), {}),
    ("TopPLogitsWarper", (0.3,), {"min_tokens_to_keep": 3}),
    ("MinPLogitsWarper", (0.1,), {}),
    ("RepetitionPenaltyLogitsProcessor", (1.7,), {}),
    ("RepetitionPenaltyLogitsProcessor", (0.6,), {"prompt_ignore_length": 3}),
    ("NoRepeatNGramLogitsProcessor", (2,), {}),
    ("NoRepeatNGramLogitsProcessor", (3,), {}),
    ("MinLengthLogitsProcessor", (30, [2, 7]), {}),
    ("MinNewTokensLengthLogitsProcessor", (8, 20, 2), {}),
]


@pytest.mark.parametrize(
    "name,args,kwargs", PROCESSORS, ids=[f"{p[0]}-{i}" for i, p in enumerate(PROCESSORS)]
)
def test_processor_matches_huggingface(hf, name, args, kwargs):
    import torch

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, (4, 12))  # small id range: repeated n-grams occur
    scores = (rng.standard_normal((4, 20)) * 3).astype(np.float32)
    ref = getattr(hf, name)(*args, **kwargs)(torch.from_numpy(ids), torch.from_numpy(scores))
    got = getattr(et, name)(*args, **kwargs)(ember.from_numpy(ids), ember.from_numpy(scores))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)


def test_processor_lists_and_criteria_compose():
    ids = ember.tensor([[5, 6, 7]])
    scores = ember.tensor([[1.0, 2.0, 3.0, 4.0]])
    chain = et.LogitsProcessorList([et.TemperatureLogitsWarper(2.0), et.TopKLogitsWarper(2)])
    np.testing.assert_allclose(chain(ids, scores).numpy(), [[-np.inf, -np.inf, 1.5, 2.0]])
    criteria = et.StoppingCriteriaList([et.MaxLengthCriteria(4), et.EosTokenCriteria([7, 9])])
    assert criteria(ids, scores).tolist() == [True]
    assert criteria.max_length == 4
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        et.TopKLogitsWarper(0)
    with pytest.raises(ValueError, match="top_p must be in"):
        et.TopPLogitsWarper(1.5)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind", KINDS)
def test_sampling_is_reproducible_with_a_seed(tiny_decoder, decoder_prompts, kind):
    _, folder = tiny_decoder(kind)
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = decoder_prompts(True)
    kwargs = dict(
        attention_mask=ember.from_numpy(mask),
        max_new_tokens=20,
        do_sample=True,
        top_k=20,
        top_p=0.9,
        temperature=1.5,
    )
    runs = []
    for seed in (7, 7, 8):
        ember.manual_seed(seed)
        runs.append(model.generate(ember.from_numpy(ids), **kwargs).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    generator = ember.Generator().manual_seed(7)
    own = model.generate(ember.from_numpy(ids), generator=generator, **kwargs).numpy()
    np.testing.assert_array_equal(own, runs[0])  # same seed, own generator: same draws


@pytest.mark.parametrize(
    "filters", [dict(top_k=4), dict(top_p=0.7), dict(top_k=6, top_p=0.8, temperature=0.7)]
)
def test_sampled_frequencies_match_the_filtered_distribution(hf, tiny_decoder, filters):
    """The first sampled token of 4000 copies of one prompt: its frequencies match HF's
    warpers' distribution over the model's logits. Tolerance: each token's count within 5
    standard deviations of n * p (binomial), a false alarm below 1e-5 over all tokens;
    tokens the filters remove are never drawn."""
    import torch

    hf_model, folder = tiny_decoder("llama")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    prompt = np.array([[5, 17, 42, 8]])
    with torch.no_grad():
        logits = hf_model(torch.from_numpy(prompt)).logits[:, -1, :]
    warpers = []
    if "temperature" in filters:
        warpers.append(hf.TemperatureLogitsWarper(filters["temperature"]))
    if "top_k" in filters:
        warpers.append(hf.TopKLogitsWarper(filters["top_k"]))
    if "top_p" in filters:
        warpers.append(hf.TopPLogitsWarper(filters["top_p"]))
    for warper in warpers:
        logits = warper(torch.from_numpy(prompt), logits)
    expected = torch.softmax(logits.double(), -1)[0].numpy()
    draws = 4000
    ember.manual_seed(0)
    out = model.generate(
        ember.from_numpy(np.repeat(prompt, draws, 0)),
        max_new_tokens=1,
        do_sample=True,
        **{"top_k": 0, **filters},
    ).numpy()[:, -1]
    counts = np.bincount(out, minlength=expected.size)
    assert counts[expected == 0].sum() == 0, "a filtered-out token was drawn"
    kept = expected > 0
    assert 2 <= kept.sum() < expected.size
    sigma = np.sqrt(draws * expected * (1 - expected))
    z = np.abs(counts - draws * expected)[kept] / np.maximum(sigma[kept], 1e-12)
    print(filters, f"kept {kept.sum()} tokens, max z {z.max():.2f}")
    assert z.max() < 5.0


# --------------------------------------------------------------------------- config and API
def test_generation_config_json_is_read_and_written(hf, tiny_decoder, decoder_prompts, tmp_path):
    _, folder = tiny_decoder("gpt2")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    model.save_pretrained(tmp_path)
    hf.GenerationConfig(
        max_new_tokens=6,
        eos_token_id=[2, 5],
        pad_token_id=0,
        repetition_penalty=1.3,
        do_sample=False,
        num_beams=2,
        no_repeat_ngram_size=3,
    ).save_pretrained(str(tmp_path))
    model = et.AutoModelForCausalLM.from_pretrained(tmp_path)
    config = model.generation_config
    assert (config.max_new_tokens, config.eos_token_id, config.repetition_penalty) == (
        6,
        [2, 5],
        1.3,
    )
    assert (config.num_beams, config.no_repeat_ngram_size) == (2, 3)
    assert (config.top_k, config.top_p, config.max_length) == (50, 1.0, 20)  # defaults
    ids, _ = decoder_prompts(False)
    hf_model = hf.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    import torch

    with torch.no_grad():
        ref = hf_model.generate(torch.from_numpy(ids)).numpy()
    got = model.generate(ember.from_numpy(ids)).numpy()  # the folder's settings apply
    np.testing.assert_array_equal(got, ref)
    assert got.shape[1] <= ids.shape[1] + 6
    assert model.generate(ember.from_numpy(ids), max_new_tokens=2).shape[1] == ids.shape[1] + 2
    assert model.generation_config.max_new_tokens == 6  # a call's kwargs do not stick
    # ember writes it back; HF reads ember's file
    model.generation_config.save_pretrained(tmp_path / "out")
    back = hf.GenerationConfig.from_pretrained(str(tmp_path / "out"))
    assert (back.max_new_tokens, back.eos_token_id, back.num_beams) == (6, [2, 5], 2)
    with open(tmp_path / "out" / "generation_config.json") as file:
        assert "top_p" not in json.load(file)  # defaults are left out, as HF does


def test_generation_config_defaults_are_huggingfaces(hf):
    ours = et.GenerationConfig()
    theirs = hf.GenerationConfig._get_default_generation_params()
    for field in ("max_length", "do_sample", "num_beams", "temperature", "top_k", "top_p"):
        assert getattr(ours, field) == theirs[field], field
    for field in ("repetition_penalty", "length_penalty", "no_repeat_ngram_size"):
        assert getattr(ours, field) == theirs[field], field
    assert ours.early_stopping is theirs["early_stopping"]


def test_generate_errors_name_the_problem(tiny_decoder):
    _, folder = tiny_decoder("llama")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ids = ember.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="neither GenerationConfig fields nor model inputs"):
        model.generate(ids, max_new_token=3)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(ids, num_return_sequences=2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(NotImplementedError, match="typical_p"):
        model.generate(ids, typical_p=0.5)
    with pytest.raises(ValueError, match="streamer works with greedy and sampling"):
        model.generate(ids, num_beams=2, streamer=et.TextStreamer(None))
    with pytest.raises(ValueError, match="attention_mask .* differ"):
        model.generate(ids, attention_mask=ember.tensor([[1, 1]]))


def test_num_return_sequences_with_sampling(tiny_decoder):
    _, folder = tiny_decoder("gpt2")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    ember.manual_seed(3)
    out = model.generate(
        ember.tensor([[5, 6, 7], [8, 9, 10]]), do_sample=True, num_return_sequences=3, max_length=9
    )
    assert tuple(out.shape) == (6, 9)
    assert out[:3, :3].tolist() == [[5, 6, 7]] * 3 and out[3:, :3].tolist() == [[8, 9, 10]] * 3


# --------------------------------------------------------------------------- streaming
class _WordTokenizer:
    """decode(ids) -> 'w5 w6 ...': enough for the streamers' word-boundary logic."""

    def decode(self, ids, **kwargs):
        return " ".join(f"w{int(i)}" for i in ids)


def test_text_streamer_prints_the_continuation(tiny_decoder, capsys):
    _, folder = tiny_decoder("llama")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    streamer = et.TextStreamer(_WordTokenizer(), skip_prompt=True)
    out = model.generate(ember.tensor([[5, 6, 7]]), max_new_tokens=6, streamer=streamer)
    printed = capsys.readouterr().out
    assert printed == _WordTokenizer().decode(out[0, 3:].tolist()) + "\n"


def test_text_iterator_streamer_from_a_thread(tiny_decoder):
    _, folder = tiny_decoder("gpt2")
    model = et.AutoModelForCausalLM.from_pretrained(folder)
    streamer = et.TextIteratorStreamer(_WordTokenizer(), timeout=60)
    result = {}

    def run():
        result["ids"] = model.generate(
            ember.tensor([[5, 6, 7]]), max_new_tokens=6, streamer=streamer
        )

    thread = threading.Thread(target=run)
    thread.start()
    pieces = list(streamer)
    thread.join(timeout=60)
    assert len(pieces) >= 2  # arrived piece by piece
    assert "".join(pieces) == _WordTokenizer().decode(result["ids"][0].tolist())


# --------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def word_tokenizer_folder(hf, tmp_path_factory):
    """A word-level tokenizer over the tiny models' 99 ids, saved by HF."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 99)}}
    engine = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    engine.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    engine.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = hf.PreTrainedTokenizerFast(
        tokenizer_object=engine, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    folder = str(tmp_path_factory.mktemp("word_tokenizer"))
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", KINDS)
def test_text_generation_pipeline_matches_huggingface(
    hf, tiny_decoder, word_tokenizer_folder, kind
):
    import shutil

    hf_model, folder = tiny_decoder(kind)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{word_tokenizer_folder}/{name}", folder)
    texts = ["w5 w17 w42 w8", "w60 w61"]
    ours = et.pipeline("text-generation", model=folder, batch_size=2)
    theirs = hf.pipeline("text-generation", model=hf_model, tokenizer=folder)
    kwargs = dict(max_new_tokens=8, do_sample=False)
    got = ours(texts, **kwargs)
    ref = [theirs(t, **kwargs) for t in texts]
    assert got == ref
    assert ours(texts[0], return_full_text=False, **kwargs) == theirs(
        texts[0], return_full_text=False, **kwargs
    )


# --------------------------------------------------------------------------- cache and masks
def test_dynamic_cache_update_reorder_crop_and_legacy_format():
    from ember.transformers.cache_utils import causal_attention_mask

    cache = et.DynamicCache()
    rng = np.random.default_rng(0)
    k1, v1 = (
        rng.standard_normal((2, 2, 3, 4), np.float32),
        rng.standard_normal((2, 2, 3, 4), np.float32),
    )
    k2, v2 = (
        rng.standard_normal((2, 2, 1, 4), np.float32),
        rng.standard_normal((2, 2, 1, 4), np.float32),
    )
    with ember.no_grad():
        cache.update(ember.from_numpy(k1), ember.from_numpy(v1), 0)
        keys, values = cache.update(ember.from_numpy(k2), ember.from_numpy(v2), 0)
    np.testing.assert_array_equal(keys.numpy(), np.concatenate([k1, k2], 2))
    np.testing.assert_array_equal(values.numpy(), np.concatenate([v1, v2], 2))
    assert cache.get_seq_length() == 4 and len(cache) == 1
    cache.reorder_cache(np.array([1, 1]))
    np.testing.assert_array_equal(cache[0][0].numpy()[0], np.concatenate([k1, k2], 2)[1])
    legacy = cache.to_legacy_cache()
    again = et.DynamicCache.from_legacy_cache(legacy)
    assert again.get_seq_length() == 4
    cache.crop(2)
    assert cache.get_seq_length() == 2 and tuple(cache[0][0].shape) == (2, 2, 2, 4)
    # autograd records through the cache when gradients are on
    k = ember.from_numpy(k1).requires_grad_()
    grad_cache = et.DynamicCache()
    keys, _ = grad_cache.update(k, ember.from_numpy(v1), 0)
    keys, _ = grad_cache.update(ember.from_numpy(k2), ember.from_numpy(v2), 0)
    keys.sum().backward()
    np.testing.assert_array_equal(k.grad.numpy(), np.ones_like(k1))
    # Note [Causal mask]: no padding and one new token -> no mask at all
    assert causal_attention_mask(None, 1, 9, ember.float32, "t") is None
    assert causal_attention_mask(np.ones((2, 9)), 1, 9, ember.float32, "t") is None
    block = causal_attention_mask(None, 3, 5, ember.float32, "t").numpy()
    assert block.shape == (1, 1, 3, 5)
    assert (block[0, 0] == 0).tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    padded = causal_attention_mask(np.array([[0, 1, 1]]), 1, 3, ember.float32, "t").numpy()
    assert (padded[0, 0, 0] == 0).tolist() == [False, True, True]


def test_generation_config_validates_fields():
    with pytest.raises(ValueError, match="top_p must be in \\[0, 1\\]"):
        et.GenerationConfig(top_p=1.5)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        et.GenerationConfig(num_beams=0)
    with pytest.raises(ValueError, match="early_stopping"):
        et.GenerationConfig(early_stopping="sometimes")
    config = et.GenerationConfig(max_new_tokens=5, custom_field="kept")
    assert config.to_diff_dict()["custom_field"] == "kept"  # unknown keys round-trip
