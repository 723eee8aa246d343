"""`pipeline(task, model=folder)`: tokenizer + model + post-processing for common tasks.

Tasks (a small registry, `PIPELINE_REGISTRY`): 'feature-extraction', 'text-classification'
(alias 'sentiment-analysis'), 'fill-mask', 'token-classification' (alias 'ner', aggregation
'none' or 'simple'), 'text-generation' (a causal LM's `generate()`). Inputs run in padded
batches of `batch_size` without gradients; outputs have HuggingFace's shapes and keys.
`compile=True` (or a model given as `ember.compile(model)`) runs the forward passes as compiled
graphs, one per batch size and sequence-length bucket.
"""

from __future__ import annotations

import numpy as np

import ember
from ember.text import AutoTokenizer
from ember.transformers.auto import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Pipeline:
    """Base: tokenizes batches, runs the model under `no_grad`, post-processes per input."""

    auto_model = AutoModel
    task = ""

    def __init__(
        self, model, tokenizer=None, batch_size: int = 8, compile: bool = False, **defaults
    ):
        from ember.graph.compile import CompiledFunction, compile as ember_compile

        compiled = None
        if isinstance(model, CompiledFunction):  # ember.compile(model): run that
            compiled, model = model, model.fn
            if not hasattr(model, "config"):
                raise TypeError(
                    f"pipeline {self.task!r}: a compiled model must be ember.compile(model) of "
                    f"a model object, got a compiled {type(model).__name__}"
                )
        if isinstance(model, str) or hasattr(model, "__fspath__"):
            folder = model
            model = self.auto_model.from_pretrained(folder)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(folder)
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if tokenizer is None:
            raise ValueError(f"pipeline {self.task!r}: pass tokenizer= with a model object")
        if batch_size < 1:
            raise ValueError(f"pipeline {self.task!r}: batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        if compile and compiled is None:
            if self.task == "text-generation":
                raise ValueError(
                    "pipeline 'text-generation': compile=True is not supported (generate() "
                    "grows the sequence one token at a time); compile=False"
                )
            compiled = ember_compile(self.model, name=f"{self.task} pipeline")
        # the forward pass: the model, or its compiled graphs (one per batch size and sequence
        # bucket, Note [Sequence buckets] in ember/transformers/compile_buckets.py)
        self.forward_fn = compiled if compiled is not None else self.model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.defaults = defaults

    def _tokenize(self, texts: list[str], **extra):
        return self.tokenizer(texts, padding=True, truncation=True, return_tensors="np", **extra)

    def _forward(self, encoded) -> object:
        inputs = {
            k: ember.from_numpy(np.asarray(encoded[k]))
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in encoded
        }
        with ember.no_grad():
            return self.forward_fn(**inputs)

    def __call__(self, inputs, **kwargs):
        options = {**self.defaults, **kwargs}
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"pipeline {self.task!r}: expected a str or a list of str")
        results = []
        for start in range(0, len(texts), self.batch_size):
            results.extend(self._run_batch(texts[start : start + self.batch_size], **options))
        return self._shape_output(results, single, options)

    def _run_batch(self, texts: list[str], **options) -> list:
        raise NotImplementedError

    def _shape_output(self, results: list, single: bool, options: dict):
        """One result for a str, a list for a list: HuggingFace's rule, which some tasks
        bend (their overrides say how)."""
        return results[0] if single else results


class FeatureExtractionPipeline(Pipeline):
    """Per input: the last hidden states, shape (1, seq, hidden) as nested lists (or an
    ember Tensor with return_tensors=True), without padding positions."""

    task = "feature-extraction"

    def _run_batch(self, texts, return_tensors: bool = False, **_):
        encoded = self._tokenize(texts)
        hidden = self._forward(encoded).last_hidden_state.numpy()
        out = []
        for row, mask in enumerate(np.asarray(encoded["attention_mask"])):
            values = hidden[row : row + 1, : int(mask.sum())]
            out.append(ember.from_numpy(values.copy()) if return_tensors else values.tolist())
        return out


class TextClassificationPipeline(Pipeline):
    """Per input: the top label {'label', 'score'}, or `top_k` of them sorted (all with
    top_k=None). Softmax over labels; sigmoid for one label or multi-label models."""

    auto_model = AutoModelForSequenceClassification
    task = "text-classification"

    def _run_batch(self, texts, top_k="default", function_to_apply=None, **_):
        logits = self._forward(self._tokenize(texts)).logits.numpy().astype(np.float64)
        config = self.model.config
        if function_to_apply is None:
            function_to_apply = (
                "sigmoid"
                if config.num_labels == 1 or config.problem_type == "multi_label_classification"
                else "softmax"
            )
        scores = {"softmax": _softmax, "sigmoid": _sigmoid, "none": lambda x: x}[function_to_apply](
            logits
        )
        out = []
        for row in scores:
            ranked = [
                {"label": config.id2label[i], "score": float(row[i])}
                for i in np.argsort(-row, kind="stable")
            ]
            if top_k == "default":
                out.append(ranked[0])
            else:
                out.append(ranked if top_k is None else ranked[:top_k])
        return out

    def _shape_output(self, results, single, options):
        # HuggingFace returns a list even for one str when top_k is left at its default
        if single and options.get("top_k", "default") == "default":
            return results
        return super()._shape_output(results, single, options)


class FillMaskPipeline(Pipeline):
    """Per input: the `top_k` (default 5) fillings of the mask token, each {'score', 'token',
    'token_str', 'sequence'}; a list of such lists when the input has several masks."""

    auto_model = AutoModelForMaskedLM
    task = "fill-mask"

    def _run_batch(self, texts, top_k: int = 5, **_):
        encoded = self._tokenize(texts)
        ids = np.asarray(encoded["input_ids"])
        mask_id = self.tokenizer.mask_token_id
        for text, row in zip(texts, ids):
            if not (row == mask_id).any():
                raise ValueError(f"fill-mask: no {self.tokenizer.mask_token} token in {text!r}")
        logits = self._forward(encoded).logits.numpy().astype(np.float64)
        special = set(self.tokenizer.all_special_ids)
        out = []
        for row, attention in enumerate(np.asarray(encoded["attention_mask"])):
            length = int(attention.sum())
            row_ids = ids[row, :length]
            per_mask = []
            for position in np.nonzero(row_ids == mask_id)[0]:
                probs = _softmax(logits[row, position])
                choices = []
                for token in np.argsort(-probs, kind="stable")[:top_k]:
                    filled = row_ids.copy()
                    filled[position] = token
                    kept = [int(t) for t in filled if int(t) not in special]
                    choices.append(
                        {
                            "score": float(probs[token]),
                            "token": int(token),
                            "token_str": self.tokenizer.decode([int(token)]),
                            "sequence": self.tokenizer.decode(kept),
                        }
                    )
                per_mask.append(choices)
            out.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return out

    def _shape_output(self, results, single, options):
        # HuggingFace unwraps a one-element list too: ["a [MASK]"] gives the flat list
        return results[0] if single or len(results) == 1 else results


def _tag(entity: str) -> tuple[str, str]:
    if entity.startswith(("B-", "I-")):
        return entity[0], entity[2:]
    return "I", entity


class TokenClassificationPipeline(Pipeline):
    """Per input: one dict per non-special token ('none': {'entity', 'score', 'index',
    'word', 'start', 'end'}) or per group of tokens ('simple': consecutive tokens of one
    entity type, a B- tag starting a new group; {'entity_group', 'score' (mean), 'word',
    'start', 'end'}). Labels in `ignore_labels` (default ['O']) are dropped."""

    auto_model = AutoModelForTokenClassification
    task = "token-classification"

    def _run_batch(self, texts, aggregation_strategy: str = "none", ignore_labels=("O",), **_):
        if aggregation_strategy not in ("none", "simple"):
            raise ValueError(
                f"token-classification: aggregation_strategy must be 'none' or "
                f"'simple', got {aggregation_strategy!r}"
            )
        encoded = self._tokenize(
            texts, return_offsets_mapping=True, return_special_tokens_mask=True
        )
        logits = self._forward(encoded).logits.numpy().astype(np.float64)
        id2label = self.model.config.id2label
        out = []
        for row, text in enumerate(texts):
            ids = np.asarray(encoded["input_ids"])[row]
            offsets = np.asarray(encoded["offset_mapping"])[row]
            special = np.asarray(encoded["special_tokens_mask"])[row]
            attention = np.asarray(encoded["attention_mask"])[row]
            probs = _softmax(logits[row])
            tokens = []
            for index in range(len(ids)):
                if special[index] or not attention[index]:
                    continue
                best = int(probs[index].argmax())
                start, end = (int(v) for v in offsets[index])
                tokens.append(
                    {
                        "entity": id2label[best],
                        "score": float(probs[index, best]),
                        "index": index,
                        "word": self.tokenizer.convert_ids_to_tokens(int(ids[index])),
                        "start": start,
                        "end": end,
                    }
                )
            if aggregation_strategy == "simple":
                tokens = self._group(tokens, text)
                out.append([g for g in tokens if g["entity_group"] not in ignore_labels])
            else:
                out.append([t for t in tokens if t["entity"] not in ignore_labels])
        return out

    def _group(self, tokens: list, text: str) -> list:
        groups, current = [], []
        for token in tokens:
            if current:
                bi, tag = _tag(token["entity"])
                _, last_tag = _tag(current[-1]["entity"])
                if not (tag == last_tag and bi != "B"):
                    groups.append(self._merge(current))
                    current = []
            current.append(token)
        if current:
            groups.append(self._merge(current))
        return groups

    def _merge(self, tokens: list) -> dict:
        return {
            "entity_group": _tag(tokens[0]["entity"])[1],
            "score": float(np.mean([t["score"] for t in tokens])),
            "word": self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }


class TextGenerationPipeline(Pipeline):
    """Per input (a str, or a chat: a list of {'role', 'content'} messages, formatted with the
    tokenizer's chat template): a list of `num_return_sequences` dicts {'generated_text'},
    the prompt followed by its continuation (`return_full_text=False`: the continuation
    only; for a chat, the conversation with the assistant's reply appended), or
    {'generated_token_ids'} with `return_tensors=True`. Other keyword arguments go to
    `generate()` (max_new_tokens, do_sample, temperature, ...). Batches are padded on the
    left, as decoder models need.

    Example:
        >>> from ember.transformers import pipeline
        >>> generator = pipeline("text-generation", model=folder)  # doctest: +SKIP
        >>> generator("Once upon a time", max_new_tokens=8)  # doctest: +SKIP
        [{'generated_text': 'Once upon a time, ...'}]
    """

    auto_model = AutoModelForCausalLM
    task = "text-generation"
    _pipeline_keys = (
        "return_full_text",
        "return_text",
        "return_tensors",
        "prefix",
        "clean_up_tokenization_spaces",
        "add_special_tokens",
        "skip_special_tokens",
    )

    def __init__(self, model, tokenizer=None, batch_size: int = 1, **defaults):
        super().__init__(model, tokenizer=tokenizer, batch_size=batch_size, **defaults)

    def __call__(self, inputs, **kwargs):
        options = {**self.defaults, **kwargs}
        chat = _is_chat(inputs)
        single = isinstance(inputs, str) or chat
        items = [inputs] if single else list(inputs)
        for item in items:
            if not isinstance(item, str) and not _is_chat(item):
                raise TypeError(
                    "pipeline 'text-generation': expected a str, a chat (list of "
                    f"{{'role', 'content'}} dicts) or a list of those, got {type(item).__name__}"
                )
        results = []
        for start in range(0, len(items), self.batch_size):
            results.extend(self._run_batch(items[start : start + self.batch_size], **options))
        return results[0] if single else results

    def _prompt_ids(self, item, prefix: str, add_special_tokens: bool) -> list[int]:
        if _is_chat(item):
            if not hasattr(self.tokenizer, "apply_chat_template"):
                raise ValueError(
                    "pipeline 'text-generation': a chat input needs a tokenizer with "
                    "apply_chat_template (a chat template in tokenizer_config.json)"
                )
            if item[-1]["role"] == "assistant":  # a prefilled reply: continue it
                options = {"continue_final_message": True}
            else:
                options = {"add_generation_prompt": True}
            text = self.tokenizer.apply_chat_template(list(item), tokenize=False, **options)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(
            self.tokenizer(prefix + item, add_special_tokens=add_special_tokens)["input_ids"]
        )

    def _run_batch(
        self,
        items,
        return_full_text: bool = True,
        return_text: bool = True,
        return_tensors: bool = False,
        prefix: str = "",
        clean_up_tokenization_spaces=None,
        add_special_tokens: bool = False,
        skip_special_tokens: bool = True,
        **generate_kwargs,
    ):
        prompts = [self._prompt_ids(item, prefix, add_special_tokens) for item in items]
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.model.generation_config.pad_token_id
        if pad_id is None:
            eos = self.model.generation_config.eos_token_id
            pad_id = (eos if isinstance(eos, int) else (eos or [0])[0]) if eos is not None else 0
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), pad_id, np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):  # left padding
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
        generate_kwargs.setdefault("pad_token_id", pad_id)
        sequences = self.model.generate(
            ember.from_numpy(ids), attention_mask=ember.from_numpy(mask), **generate_kwargs
        ).numpy()
        per_prompt = sequences.shape[0] // len(prompts)
        decode = {"skip_special_tokens": skip_special_tokens}
        if clean_up_tokenization_spaces is not None:
            decode["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        out = []
        for row, (item, prompt) in enumerate(zip(items, prompts)):
            records = []
            for k in range(per_prompt):
                generated = [int(t) for t in sequences[row * per_prompt + k, width:]]
                if return_tensors:
                    records.append({"generated_token_ids": prompt + generated})
                    continue
                new_text = self.tokenizer.decode(generated, **decode)  # as transformers 5
                if _is_chat(item) and return_full_text:
                    messages = [dict(m) for m in item]
                    if messages[-1]["role"] == "assistant":  # a prefilled reply continues
                        messages[-1]["content"] += new_text
                        text = messages
                    else:
                        text = messages + [{"role": "assistant", "content": new_text}]
                elif _is_chat(item):
                    text = new_text
                else:
                    text = item + new_text if return_full_text else new_text
                records.append({"generated_text": text})
            out.append(records)
        return out


def _is_chat(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


PIPELINE_REGISTRY: dict[str, type[Pipeline]] = {
    "feature-extraction": FeatureExtractionPipeline,
    "text-classification": TextClassificationPipeline,
    "sentiment-analysis": TextClassificationPipeline,
    "fill-mask": FillMaskPipeline,
    "token-classification": TokenClassificationPipeline,
    "ner": TokenClassificationPipeline,
    "text-generation": TextGenerationPipeline,
}


def pipeline(task: str, model=None, tokenizer=None, batch_size: int = 8, **kwargs) -> Pipeline:
    """Build a pipeline for `task` from a model folder (or a model object plus tokenizer).

    Example:
        >>> from ember.transformers import pipeline
        >>> pipeline("summarization", model=".")
        Traceback (most recent call last):
        ...
        ValueError: pipeline: unknown task 'summarization'; ember has ['feature-extraction', \
'fill-mask', 'ner', 'sentiment-analysis', 'text-classification', 'text-generation', \
'token-classification']
    """
    if task not in PIPELINE_REGISTRY:
        raise ValueError(f"pipeline: unknown task {task!r}; ember has {sorted(PIPELINE_REGISTRY)}")
    if model is None:
        raise ValueError(
            f"pipeline {task!r}: pass model= (a local folder or a model object); "
            "ember has no default models and never downloads"
        )
    return PIPELINE_REGISTRY[task](model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
