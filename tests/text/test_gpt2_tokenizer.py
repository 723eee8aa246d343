"""GPT2Tokenizer (byte-level BPE) and apply_chat_template against HuggingFace transformers.

A byte-level BPE is trained here with the `tokenizers` library on one text (this package's
tokenizer source) and checked on held-out text (README prose, unicode, code, digits). It is
saved three ways: vocab.json + merges.txt (the slow format), a GPT-2 tokenizer.json, and a
Llama-3-style tokenizer.json (split pattern + byte level, bos added by the post-processor,
ChatML template). Each folder is loaded by ember and by transformers and compared: ids,
masks, special tokens in text, decode, batches padded on the left, chat templates.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ember.text import AutoTokenizer, GPT2Tokenizer

pytest.importorskip("tokenizers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Jinja features chat templates use: namespace, loop controls, tojson, raise_exception,
# special-token variables, extra keyword variables, trim_blocks / lstrip_blocks.
RICH_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(count=0) %}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if message['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.count = ns.count + 1 %}
<{{ message['role'] }} n={{ ns.count }}>{{ message['content'] | trim }}{{ eos_token }}
{% endfor %}
{% if tools %}tools: {{ tools | tojson }}
{% endif %}
{% if greeting is defined %}{{ greeting }}{% endif %}
{% if add_generation_prompt %}<assistant>{% endif %}"""


def _held_out() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    paragraphs = [p for p in readme.split("\n\n") if p.strip()][:40]
    return paragraphs + [
        "naïve café über straße Ångström — «quotes» ‘single’",
        "日本語 テキスト 😀👍🏽 family 👨‍👩‍👧",
        "def f(x):\n\treturn x ** 2  # 3.14159, 2026-12-06, 1234567890",
        "  leading spaces and trailing  ",
        "<|im_start|>user\nspecial tokens inside<|im_end|><|endoftext|>",
        "",
        "\x00\x07 control bytes \u200b zero width",
    ]


def _train():
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    with open(os.path.join(ROOT, "ember", "text", "tokenization.py"), encoding="utf-8") as file:
        corpus = file.read().split("\n")
    engine = tokenizers.Tokenizer(models.BPE())
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    engine.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    engine.train_from_iterator(corpus, trainer)
    return engine


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{'slow': vocab.json + merges.txt, 'gpt2': GPT-2 tokenizer.json,
    'llama3': Llama-3-style tokenizer.json} folders with their tokenizer_config.json."""
    from tokenizers import Regex, pre_tokenizers, processors

    engine = _train()
    root = tmp_path_factory.mktemp("gpt2_tokenizers")
    model = json.loads(engine.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]

    slow = root / "slow"
    slow.mkdir()
    (slow / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    (slow / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    (slow / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 64}), "utf-8"
    )

    gpt2 = root / "gpt2"
    gpt2.mkdir()
    engine.post_processor = processors.ByteLevel(trim_offsets=False)
    engine.save(str(gpt2 / "tokenizer.json"))
    (gpt2 / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 1024,
            }
        ),
        "utf-8",
    )

    llama3 = root / "llama3"
    llama3.mkdir()
    split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    engine.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    engine.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A",
        pair="<|im_start|> $A <|im_start|> $B:1",
        special_tokens=[("<|im_start|>", engine.token_to_id("<|im_start|>"))],
    )
    engine.save(str(llama3 / "tokenizer.json"))
    (llama3 / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "model_input_names": ["input_ids", "attention_mask"],
                "chat_template": CHATML,
                "model_max_length": 2048,
            }
        ),
        "utf-8",
    )
    return {"slow": str(slow), "gpt2": str(gpt2), "llama3": str(llama3)}


def _pair(hf_transformers, folder):
    return AutoTokenizer.from_pretrained(folder), hf_transformers.AutoTokenizer.from_pretrained(
        folder
    )


@pytest.mark.parametrize("kind", ["slow", "gpt2", "llama3"])
def test_ids_equal_huggingface_on_held_out_text(hf_transformers, folders, kind):
    ours, theirs = _pair(hf_transformers, folders[kind])
    assert type(ours).__name__ in ("GPT2Tokenizer", "PreTrainedTokenizerFast")
    assert len(ours) == len(theirs)
    assert (
        ours.special_tokens_map.items()
        >= {k: str(v) for k, v in theirs.special_tokens_map.items() if isinstance(v, str)}.items()
    )
    texts = _held_out()
    for text in texts:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
        assert ours.tokenize(text) == theirs.tokenize(text), text
    batch_ours = ours(texts)
    batch_theirs = theirs(texts)
    assert batch_ours.keys() == batch_theirs.keys()
    for key in batch_theirs:
        assert batch_ours[key] == batch_theirs[key], key


@pytest.mark.parametrize("kind", ["slow", "gpt2", "llama3"])
@pytest.mark.parametrize("skip", [False, True])
def test_decode_equals_huggingface(hf_transformers, folders, kind, skip):
    ours, theirs = _pair(hf_transformers, folders[kind])
    for text in _held_out():
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
            ids, skip_special_tokens=skip
        ), text
    ids = [theirs(text)["input_ids"] for text in _held_out()[:5]]
    assert ours.batch_decode(ids) == theirs.batch_decode(ids)


@pytest.mark.parametrize("kind", ["slow", "gpt2", "llama3"])
def test_left_padded_batch_equals_huggingface(hf_transformers, folders, kind):
    ours, theirs = _pair(hf_transformers, folders[kind])
    for tokenizer in (ours, theirs):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
    texts = ["a short one", "a much longer prompt, with more words in it", "mid length text"]
    mine = ours(texts, padding=True, return_tensors="np")
    ref = theirs(texts, padding=True, return_tensors="np")
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(mine[key], ref[key])
    assert (mine["attention_mask"][:, -1] == 1).all()  # the padding is on the left
    mine = ours(texts, padding="max_length", max_length=16, truncation=True)
    ref = theirs(texts, padding="max_length", max_length=16, truncation=True)
    assert mine["input_ids"] == ref["input_ids"]


def test_add_prefix_space_and_bos_flag(hf_transformers, folders):
    text = "Hello world again"
    ours = GPT2Tokenizer.from_pretrained(folders["slow"], add_prefix_space=True)
    theirs = hf_transformers.GPT2Tokenizer.from_pretrained(folders["slow"], add_prefix_space=True)
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    ours = GPT2Tokenizer.from_pretrained(folders["slow"], add_bos_token=True)
    theirs = hf_transformers.GPT2Tokenizer.from_pretrained(folders["slow"], add_bos_token=True)
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ours(text)["input_ids"][0] == ours.bos_token_id
    assert ours(text, "and a pair")["input_ids"] == theirs(text, "and a pair")["input_ids"]


def test_save_and_reload_keeps_ids_and_template(hf_transformers, folders, tmp_path):
    ours = AutoTokenizer.from_pretrained(folders["llama3"])
    ours.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    theirs = hf_transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in _held_out()[:10]:
        assert again(text)["input_ids"] == ours(text)["input_ids"] == theirs(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}]
    assert again.apply_chat_template(messages, tokenize=False) == theirs.apply_chat_template(
        messages, tokenize=False
    )


def test_bad_vocabulary_files_name_the_file(tmp_path):
    (tmp_path / "vocab.json").write_text('{"a": 0}', "utf-8")
    with pytest.raises(ValueError, match="GPT2Tokenizer: needs both vocab_file and merges_file"):
        GPT2Tokenizer(vocab_file=str(tmp_path / "vocab.json"))
    (tmp_path / "merges.txt").write_text("a b c\n", "utf-8")
    with pytest.raises(ValueError, match="line 1 of .*merges.txt"):
        GPT2Tokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------- chat templates

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "  Blue.  "},
        {"role": "user", "content": "Another, with ünïcödé 😀"},
    ],
]


@pytest.mark.parametrize("template", ["chatml", "rich"])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", [0, 1])
def test_chat_template_text_and_ids_equal_huggingface(
    hf_transformers, folders, template, add_generation_prompt, conversation
):
    ours, theirs = _pair(hf_transformers, folders["llama3"])
    source = CHATML if template == "chatml" else RICH_TEMPLATE
    messages = CONVERSATIONS[conversation]
    tools = [{"type": "function", "function": {"name": "add", "description": "x + y ü"}}]
    extra = {"greeting": "hello"} if template == "rich" else {}
    kwargs = dict(
        chat_template=source, add_generation_prompt=add_generation_prompt, tools=tools, **extra
    )
    text = ours.apply_chat_template(messages, tokenize=False, **kwargs)
    assert text == theirs.apply_chat_template(messages, tokenize=False, **kwargs)
    mine = ours.apply_chat_template(messages, **kwargs)
    ref = theirs.apply_chat_template(messages, **kwargs)
    assert mine["input_ids"] == ref["input_ids"]
    assert ours.apply_chat_template(messages, return_dict=False, **kwargs) == ref["input_ids"]


def test_chat_template_batch_continue_and_errors(hf_transformers, folders):
    ours, theirs = _pair(hf_transformers, folders["llama3"])
    ours.padding_side = theirs.padding_side = "left"
    mine = ours.apply_chat_template(
        CONVERSATIONS, add_generation_prompt=True, padding=True, return_tensors="np"
    )
    ref = theirs.apply_chat_template(
        CONVERSATIONS, add_generation_prompt=True, padding=True, return_tensors="np"
    )
    np.testing.assert_array_equal(mine["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(mine["attention_mask"], ref["attention_mask"])
    partial = CONVERSATIONS[0] + [{"role": "assistant", "content": "The answer is"}]
    text = ours.apply_chat_template(partial, tokenize=False, continue_final_message=True)
    assert text == theirs.apply_chat_template(partial, tokenize=False, continue_final_message=True)
    assert text.endswith("The answer is")
    bad = [{"role": "robot", "content": "beep"}]
    with pytest.raises(ValueError, match="unknown role robot"):
        ours.apply_chat_template(bad, chat_template=RICH_TEMPLATE)
    with pytest.raises(TypeError, match="message 0 should be a dict"):
        ours.apply_chat_template(["not a message"])
    with pytest.raises(ValueError, match="does not parse"):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template="{% for %}")
    with pytest.raises(ValueError, match="has no chat template"):
        AutoTokenizer.from_pretrained(folders["gpt2"]).apply_chat_template(CONVERSATIONS[0])


def test_chat_template_sandbox_blocks_python_internals(folders):
    ours = AutoTokenizer.from_pretrained(folders["llama3"])
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ValueError, match="unsafe"):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template=escape)
    mutate = "{{ messages.append({'role': 'x'}) }}"
    with pytest.raises(ValueError, match="unsafe|immutable"):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template=mutate)
