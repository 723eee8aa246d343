"""A tokenizer from a GGUF file's metadata (`from_pretrained(folder, gguf_file=...)`).

Note [GGUF tokenizers]: a GGUF carries no tokenizer.json; llama.cpp stores the tokenizer as
metadata: `tokenizer.ggml.model` (the algorithm: 'gpt2' is byte-level BPE), `.tokens` (the
vocabulary, ids by position), `.merges`, `.token_type` (1 normal, 3 control, 4 user-defined),
`.pre` (the pre-tokenizer's name), the bos / eos / unknown / padding token ids,
`.add_bos_token` / `.add_eos_token`, and `tokenizer.chat_template`. It is rebuilt as
HuggingFace transformers rebuilds it, so that ids equal theirs:
- a 'gpt2' vocabulary becomes GPT-2's byte-level BPE (Note [Byte-level BPE]) over the file's
  tokens and merges; a token not spelled in the byte alphabet is respelled from its UTF-8 bytes;
- control tokens spelled in the byte alphabet become special tokens, user-defined tokens added
  tokens (both matched whole in the text, never split);
- the pre-tokenizer names that transformers maps to a split pattern (Llama 3's, Qwen 2's) get
  that pattern before the byte-level step; other names keep GPT-2's pattern;
- the special tokens are the tokens at the given ids; the chat template and the bos/eos flags
  go to the tokenizer's config (Note [BOS and EOS flags], Note [Chat templates]).
SentencePiece ('llama') and other vocabularies are not rebuilt: the error names the field.
"""

from __future__ import annotations

from ember.io.gguf import GGUFFile
from ember.text.byte_level_bpe import byte_level_bpe_engine, bytes_to_unicode

__all__ = ["GGUF_PRE_TOKENIZER_PATTERNS", "tokenizer_from_gguf"]

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split pattern applied before the byte-level step (as transformers)
GGUF_PRE_TOKENIZER_PATTERNS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
_CONTROL, _USER_DEFINED = 3, 4
_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def tokenizer_from_gguf(path: str, where: str = "from_pretrained"):
    """(engine, config) for the tokenizer a GGUF file describes (Note [GGUF tokenizers]):
    a `tokenizers.Tokenizer` and the keyword arguments of `PreTrainedTokenizerFast`."""
    from tokenizers import AddedToken, Regex, pre_tokenizers

    gguf = GGUFFile(path)
    try:
        kind = gguf.field("tokenizer.ggml.model")
        if kind is None:
            raise ValueError(f"{where}: {path!r} holds no tokenizer (no tokenizer.ggml.model)")
        if kind != "gpt2":
            raise NotImplementedError(
                f"{where}: {path!r} has tokenizer.ggml.model={kind!r}; ember rebuilds "
                "byte-level BPE vocabularies ('gpt2': GPT-2, Llama 3, SmolLM, Qwen) from GGUF "
                "files, not this one"
            )
        tokens = gguf.field("tokenizer.ggml.tokens")
        merges = gguf.field("tokenizer.ggml.merges")
        if not tokens or merges is None:
            raise ValueError(
                f"{where}: {path!r} lacks tokenizer.ggml.tokens or tokenizer.ggml.merges"
            )
        token_types = gguf.field("tokenizer.ggml.token_type") or [1] * len(tokens)
        pre = gguf.field("tokenizer.ggml.pre")
        ids = {name: gguf.field(key) for name, key in _SPECIAL_IDS.items()}
        flags = {
            name: gguf.field(f"tokenizer.ggml.{name}")
            for name in ("add_bos_token", "add_eos_token")
        }
        chat_template = gguf.field("tokenizer.chat_template")
    finally:
        gguf.close()

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            token = "".join(spelling[byte] for byte in token.encode("utf-8"))
        vocab.setdefault(token, index)
    pairs = []
    for number, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(
                f"{where}: merge {number} of {path!r} should be two symbols separated by one "
                f"space, got {merge!r}"
            )
        pairs.append((parts[0], parts[1]))
    engine = byte_level_bpe_engine(vocab, pairs, where=f"{where} ({path!r})")
    control = [
        AddedToken(token, normalized=False, special=True)
        for token, kind in zip(tokens, token_types)
        if kind == _CONTROL and set(token) <= alphabet
    ]
    engine.add_special_tokens(control)
    user_defined = [
        AddedToken(token, normalized=False, special=False)
        for token, kind in zip(tokens, token_types)
        if kind == _USER_DEFINED and token in vocab
    ]
    if user_defined:
        engine.add_tokens(user_defined)
    pattern = GGUF_PRE_TOKENIZER_PATTERNS.get(pre)
    if pattern is not None:
        engine.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    config = {}
    for name, index in ids.items():
        if index is not None:
            if not 0 <= index < len(tokens):
                raise ValueError(
                    f"{where}: {path!r} gives {_SPECIAL_IDS[name]}={index}, outside the "
                    f"vocabulary of {len(tokens)} tokens"
                )
            config[name] = tokens[index]
        else:
            config[name] = None
    named = set(config.values())
    config["additional_special_tokens"] = [t.content for t in control if t.content not in named]
    for name, value in flags.items():
        if value is not None:
            config[name] = bool(value)
    if chat_template is not None:
        config["chat_template"] = chat_template
    return engine, config
