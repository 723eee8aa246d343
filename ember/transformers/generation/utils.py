"""`GenerationMixin.generate()`: greedy, sampling and beam-search decoding for the causal LMs.

Note [Decode loop]: the prompt runs once (the prefill) with the cache on, asking the head for
the last position's logits only (`logits_to_keep=1`); every later step feeds one token per row
and the cache (Note [KV cache]), which `generate` reserves for the whole output up front. The
token ids live in a preallocated (batch, max_length) NumPy array; the attention mask is passed
only when the prompt has padding (a padding-free batch needs none, Note [Causal mask]), and
then positions follow the mask, so left-padded rows continue at their own positions. The loop
runs under `no_grad`. With `use_cache=False` every step reruns the whole sequence (the
reference the cache is tested against). Finished rows keep receiving `pad_token_id`, as in
HuggingFace.

Note [Beam search]: a NumPy port of HuggingFace's vectorised beam search (transformers 5):
per step, the top 2 * num_beams (more with several EOS ids) continuations over all beams,
finished ones (EOS) scored with the length penalty into a per-row pool of num_beams
hypotheses, the best unfinished ones continue; the stop rule follows `early_stopping` (True:
when num_beams hypotheses are done; False: when no running beam can beat the worst finished
one at its current length; "never": at the best length the penalty allows). The cache rows
follow the chosen parents (`reorder_cache`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import ember
from ember.autograd import no_grad
from ember.backend.random import default_generator
from ember.transformers.cache_utils import DynamicCache, position_ids_from_mask
from ember.transformers.generation.configuration_utils import (
    GENERATION_CONFIG_NAME,
    GenerationConfig,
)
from ember.transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from ember.transformers.generation.stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
)
from ember.transformers.modeling_outputs import ModelOutput

logger = logging.getLogger("ember.transformers")


@dataclass(repr=False)
class GenerateDecoderOnlyOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)` for greedy and sampling."""

    sequences: Any = None
    scores: tuple | None = None
    logits: tuple | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    past_key_values: Any = None


@dataclass(repr=False)
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)` for beam search."""

    sequences: Any = None
    sequences_scores: Any = None
    scores: tuple | None = None
    logits: tuple | None = None
    beam_indices: Any = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    past_key_values: Any = None


def _as_numpy_ids(value, name: str) -> np.ndarray:
    if isinstance(value, ember.Tensor):
        value = value.numpy(force=True)
    array = np.asarray(value)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"generate: {name} must be (batch, seq), got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise TypeError(f"generate: {name} must hold integers, got {array.dtype}")
    return array.astype(np.int64)


def _id_list(ids) -> list[int] | None:
    if ids is None:
        return None
    if isinstance(ids, ember.Tensor):
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]


def _softmax64(scores: np.ndarray) -> np.ndarray:
    shifted = scores.astype(np.float64) - scores.max(-1, keepdims=True)
    probs = np.exp(shifted)
    return probs / probs.sum(-1, keepdims=True)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _sample_rows(probs: np.ndarray, rng) -> np.ndarray:
    """One draw per row of a (batch, vocab) probability array (inverse CDF, float64): a token
    of probability zero is never drawn."""
    cdf = np.cumsum(probs, -1)
    targets = rng.random(probs.shape[0]) * cdf[:, -1]
    picks = (cdf <= targets[:, None]).sum(-1)
    return np.minimum(picks, probs.shape[-1] - 1).astype(np.int64)


class GenerationMixin:
    """`generate()` for models whose forward takes input_ids, attention_mask,
    past_key_values, use_cache and logits_to_keep and returns logits and past_key_values."""

    # --- the generation config ------------------------------------------------------------------
    @property
    def generation_config(self) -> GenerationConfig:
        config = self.__dict__.get("_generation_config")
        if config is None:
            config = GenerationConfig.from_model_config(self.config)
            self.__dict__["_generation_config"] = config
        return config

    @generation_config.setter
    def generation_config(self, value: GenerationConfig) -> None:
        if not isinstance(value, GenerationConfig):
            raise TypeError(
                f"generation_config must be a GenerationConfig, got {type(value).__name__}"
            )
        self.__dict__["_generation_config"] = value

    def _load_extras(self, folder: str) -> None:
        """from_pretrained's hook: read the folder's generation_config.json when there is one."""
        if os.path.isfile(os.path.join(folder, GENERATION_CONFIG_NAME)):
            self.generation_config = GenerationConfig.from_pretrained(folder)

    def _save_extras(self, folder: str) -> None:
        """save_pretrained's hook: write generation_config.json."""
        self.generation_config.save_pretrained(folder)

    def can_generate(self) -> bool:
        return True

    # --- public entry -----------------------------------------------------------------------
    def generate(
        self,
        inputs=None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer=None,
        generator=None,
        **kwargs,
    ):
        """Continue each row of `inputs` (input_ids, (batch, seq)) and return the ids, prompt
        included, as an int64 Tensor (or a `GenerateDecoderOnlyOutput` /
        `GenerateBeamDecoderOnlyOutput` with `return_dict_in_generate=True`).

        Keyword arguments naming `GenerationConfig` fields override the model's
        `generation_config` for this call (max_new_tokens, do_sample, temperature, top_k,
        top_p, num_beams, ...); `attention_mask` (1 = token, 0 = padding; pad on the left) is
        the model input. `logits_processor` / `stopping_criteria` add to the ones the config
        builds. `generator` (an `ember.Generator`) seeds sampling; by default the global one
        (`ember.manual_seed`). See Note [Decode loop] and Note [Beam search].

        Example:
            >>> import ember
            >>> from ember.transformers import GPT2Config, GPT2LMHeadModel
            >>> _ = ember.manual_seed(0)
            >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2,
            ...     n_head=4, n_positions=64)).eval()
            >>> out = model.generate(ember.tensor([[1, 2, 3]]), max_new_tokens=5)
            >>> tuple(out.shape), out[0, :3].tolist()
            ((1, 8), [1, 2, 3])
        """
        if kwargs.get("input_ids") is not None:
            if inputs is not None:
                raise ValueError("generate: pass the prompt as inputs or input_ids, not both")
            inputs = kwargs.pop("input_ids")
        kwargs.pop("input_ids", None)
        if inputs is None:
            raise ValueError("generate: no prompt; pass input_ids (batch, seq)")
        config = copy.deepcopy(
            generation_config if generation_config is not None else self.generation_config
        )
        model_kwargs = config.update(**kwargs)
        config.check_supported()
        attention_mask = model_kwargs.pop("attention_mask", None)
        if model_kwargs.pop("token_type_ids", None) is not None:
            raise ValueError(f"generate: {type(self).__name__} takes no token_type_ids")
        if model_kwargs:
            raise ValueError(
                f"generate: these arguments are neither GenerationConfig fields nor model "
                f"inputs: {sorted(model_kwargs)}"
            )
        ids = _as_numpy_ids(inputs, "input_ids")
        if ids.shape[1] == 0:
            raise ValueError("generate: input_ids is empty; give at least one token")
        eos = _id_list(config.eos_token_id)
        if config.pad_token_id is None and eos:
            logger.info("generate: pad_token_id unset; using eos_token_id %d", eos[0])
            config.pad_token_id = eos[0]
        mask = self._prepare_attention_mask(ids, attention_mask, config, eos)
        if config.pad_token_id is not None and ids.shape[0] > 1 and mask is not None:
            if np.any(mask[:, -1] == 0):
                logger.warning(
                    "generate: right padding detected in a decoder-only model; pad on the "
                    "left (tokenizer padding_side='left') for correct continuations"
                )
        prompt_length = ids.shape[1]
        if config.max_new_tokens is not None:
            config.max_length = prompt_length + config.max_new_tokens
        if config.min_new_tokens is not None:
            config.min_length = prompt_length + config.min_new_tokens
        if prompt_length >= config.max_length:
            logger.warning(
                "generate: the prompt has %d tokens and max_length is %d; set max_new_tokens",
                prompt_length,
                config.max_length,
            )
        num_beams = int(config.num_beams)
        if streamer is not None and num_beams > 1:
            raise ValueError("generate: streamer works with greedy and sampling, not beam search")
        if num_beams == 1 and not config.do_sample and config.num_return_sequences > 1:
            raise ValueError(
                "generate: greedy search returns one sequence per prompt; num_return_sequences"
                f"={config.num_return_sequences} needs do_sample=True or num_beams > 1"
            )
        if config.num_return_sequences > num_beams > 1:
            raise ValueError(
                f"generate: num_return_sequences ({config.num_return_sequences}) must be <= "
                f"num_beams ({num_beams})"
            )
        processors = self._logits_processors(config, prompt_length, mask, logits_processor)
        criteria = self._stopping_criteria(config, eos, stopping_criteria)
        rng = (generator or default_generator()).rng
        # the mode is the caller's, as in HuggingFace: a model in train() mode decodes with
        # dropout on (from_pretrained returns it in eval mode)
        with no_grad():
            if num_beams > 1:
                return self._beam_search(ids, mask, config, processors, criteria, eos, rng)
            expand = config.num_return_sequences
            if expand > 1:
                ids = np.repeat(ids, expand, 0)
                mask = None if mask is None else np.repeat(mask, expand, 0)
            return self._sample(ids, mask, config, processors, criteria, streamer, rng)

    # --- setup --------------------------------------------------------------------------------
    @staticmethod
    def _prepare_attention_mask(ids, attention_mask, config, eos) -> np.ndarray | None:
        """The given mask, or one inferred from pad tokens as HuggingFace does (when the pad id
        is in the prompt and is not an EOS id); None when there is no padding."""
        if attention_mask is not None:
            mask = _as_numpy_ids(attention_mask, "attention_mask")
            if mask.shape != ids.shape:
                raise ValueError(
                    f"generate: attention_mask {mask.shape} and input_ids {ids.shape} differ"
                )
        else:
            pad = config.pad_token_id
            if pad is None or not np.any(ids == pad) or (eos and pad in eos):
                return None
            mask = (ids != pad).astype(np.int64)
        return None if np.all(mask != 0) else mask

    def _logits_processors(self, config, prompt_length, mask, extra) -> LogitsProcessorList:
        """HuggingFace's order: penalties and constraints, then (sampling) the warpers."""
        eos = _id_list(config.eos_token_id)
        processors = LogitsProcessorList()
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            padding = None if mask is None else np.argmax(mask != 0, axis=1)
            processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty, padding))
        if config.no_repeat_ngram_size:
            processors.append(NoRepeatNGramLogitsProcessor(int(config.no_repeat_ngram_size)))
        if eos and config.min_length and config.min_length > 0:
            processors.append(MinLengthLogitsProcessor(int(config.min_length), eos))
        if eos and config.min_new_tokens and config.min_new_tokens > 0:
            processors.append(
                MinNewTokensLengthLogitsProcessor(prompt_length, config.min_new_tokens, eos)
            )
        if config.forced_bos_token_id is not None:
            processors.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
        if config.forced_eos_token_id is not None:
            processors.append(
                ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id)
            )
        if config.remove_invalid_values:
            processors.append(InfNanRemoveLogitsProcessor())
        if config.suppress_tokens is not None:
            processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens))
        if config.begin_suppress_tokens is not None:
            processors.append(
                SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, prompt_length)
            )
        if extra:
            processors.extend(extra)
        if config.do_sample:
            keep = (len(eos or []) + 1 if eos else 2) if config.num_beams > 1 else 1
            if config.temperature is not None and config.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k is not None and config.top_k != 0:
                processors.append(TopKLogitsWarper(int(config.top_k), min_tokens_to_keep=keep))
            if config.top_p is not None and config.top_p < 1.0:
                processors.append(TopPLogitsWarper(config.top_p, min_tokens_to_keep=keep))
            if config.min_p is not None:
                processors.append(MinPLogitsWarper(config.min_p, min_tokens_to_keep=keep))
        if config.renormalize_logits:
            processors.append(LogitNormalization())
        return processors

    @staticmethod
    def _stopping_criteria(config, eos, extra) -> StoppingCriteriaList:
        criteria = StoppingCriteriaList()
        if config.max_length is not None:
            criteria.append(MaxLengthCriteria(config.max_length))
        if config.max_time is not None:
            criteria.append(MaxTimeCriteria(config.max_time))
        if eos:
            criteria.append(EosTokenCriteria(eos))
        if extra:
            criteria.extend(extra)
        return criteria

    def _step(self, tokens, mask, cache, config, full_length: int):
        """One forward for the decode loop; returns (batch, vocab) float32 logits of the last
        position and the output (for attentions / hidden states)."""
        positions = None
        if mask is not None:
            mask = mask[:, :full_length]
            positions = ember.from_numpy(position_ids_from_mask(mask, tokens.shape[1]))
            mask = ember.from_numpy(mask)
        out = self(
            input_ids=ember.from_numpy(np.ascontiguousarray(tokens)),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            output_attentions=config.output_attentions,
            output_hidden_states=config.output_hidden_states,
            logits_to_keep=1,
            return_dict=True,
        )
        logits = out.logits.numpy(force=True)[:, -1, :]
        return logits.astype(np.float32, copy=False), out

    # --- greedy and sampling ------------------------------------------------------------------
    def _sample(self, ids, mask, config, processors, criteria, streamer, rng):
        """Note [Decode loop]."""
        batch, prompt_length = ids.shape
        max_length = max(config.max_length, prompt_length + 1)
        sequences = np.full((batch, max_length), config.pad_token_id or 0, np.int64)
        sequences[:, :prompt_length] = ids
        if mask is not None:
            full_mask = np.ones((batch, max_length), np.int64)
            full_mask[:, :prompt_length] = mask
        else:
            full_mask = None
        use_cache = config.use_cache
        cache = DynamicCache(reserve=max_length) if use_cache else None
        unfinished = np.ones(batch, bool)
        pad = config.pad_token_id
        keep_scores = config.return_dict_in_generate and config.output_scores
        keep_logits = config.return_dict_in_generate and config.output_logits
        scores_out, logits_out, attentions_out, hidden_out = [], [], [], []
        if streamer is not None:
            streamer.put(ids)
        length = prompt_length
        logits, out = self._step(ids, full_mask, cache, config, length)
        while True:
            ids_view = ember.from_numpy(sequences[:, :length])
            scores = processors(ids_view, ember.from_numpy(logits))
            scores = scores.numpy(force=True) if isinstance(scores, ember.Tensor) else scores
            if keep_scores:
                scores_out.append(ember.from_numpy(scores.copy()))
            if keep_logits:
                logits_out.append(ember.from_numpy(logits.copy()))
            if config.return_dict_in_generate and config.output_attentions:
                attentions_out.append(out.attentions)
            if config.return_dict_in_generate and config.output_hidden_states:
                hidden_out.append(out.hidden_states)
            if config.do_sample:
                next_tokens = _sample_rows(_softmax64(scores), rng)
            else:
                next_tokens = np.argmax(scores, -1)
            if pad is not None:
                next_tokens = np.where(unfinished, next_tokens, pad)
            sequences[:, length] = next_tokens
            length += 1
            if streamer is not None:
                streamer.put(next_tokens)
            done = criteria(ember.from_numpy(sequences[:, :length]), ember.from_numpy(scores))
            unfinished &= ~done
            if not unfinished.any() or length >= max_length:
                break
            if use_cache:
                logits, out = self._step(
                    sequences[:, length - 1 : length], full_mask, cache, config, length
                )
            else:
                logits, out = self._step(sequences[:, :length], full_mask, None, config, length)
        if streamer is not None:
            streamer.end()
        result = ember.from_numpy(sequences[:, :length].copy())
        if not config.return_dict_in_generate:
            return result
        return GenerateDecoderOnlyOutput(
            sequences=result,
            scores=tuple(scores_out) if keep_scores else None,
            logits=tuple(logits_out) if keep_logits else None,
            attentions=tuple(attentions_out) if config.output_attentions else None,
            hidden_states=tuple(hidden_out) if config.output_hidden_states else None,
            past_key_values=cache,
        )

    # --- beam search --------------------------------------------------------------------------
    def _beam_search(self, ids, mask, config, processors, criteria, eos, rng):
        """Note [Beam search]."""
        num_beams = int(config.num_beams)
        batch, prompt_length = ids.shape
        max_length = max(config.max_length, prompt_length + 1)
        length_penalty = float(config.length_penalty)
        early_stopping = config.early_stopping
        flat = batch * num_beams
        beams_to_keep = max(2, 1 + len(eos or [])) * num_beams
        top_num_beam_mask = np.zeros(beams_to_keep, bool)
        top_num_beam_mask[:num_beams] = True
        # HuggingFace's fill value, quirk included: pad_token_id 0 counts as unset (`pad or eos`)
        fill = config.pad_token_id or (eos[0] if eos else -1)
        running = np.full((batch, num_beams, max_length), fill, np.int64)
        running[:, :, :prompt_length] = ids[:, None, :]
        sequences = running.copy()
        running_scores = np.zeros((batch, num_beams), np.float32)
        running_scores[:, 1:] = -1e9
        beam_scores = np.full((batch, num_beams), -1e9, np.float32)
        finished = np.zeros((batch, num_beams), bool)
        improvable = np.ones((batch, 1), bool)
        hits = np.zeros((batch, num_beams), bool)
        running_indices = np.full((batch, num_beams, max_length - prompt_length), -1, np.int64)
        beam_indices = running_indices.copy()
        if mask is not None:
            full_mask = np.ones((flat, max_length), np.int64)
            full_mask[:, :prompt_length] = np.repeat(mask, num_beams, 0)
        else:
            full_mask = None
        use_cache = config.use_cache
        cache = DynamicCache(reserve=max_length) if use_cache else None
        keep_scores = config.return_dict_in_generate and config.output_scores
        keep_logits = config.return_dict_in_generate and config.output_logits
        scores_out, logits_out = [], []
        cur = prompt_length
        flat_running = np.repeat(ids, num_beams, 0)
        logits, _ = self._step(flat_running, full_mask, cache, config, cur)
        batch_offset = np.arange(batch)[:, None] * num_beams
        while True:
            if keep_logits:
                logits_out.append(ember.from_numpy(logits.copy()))
            log_probs = _log_softmax(logits.astype(np.float32))
            log_probs = processors(ember.from_numpy(flat_running), ember.from_numpy(log_probs))
            log_probs = (
                log_probs.numpy(force=True) if isinstance(log_probs, ember.Tensor) else log_probs
            )
            if keep_scores:
                scores_out.append(ember.from_numpy(np.array(log_probs)))
            vocab = log_probs.shape[-1]
            accumulated = (
                log_probs.reshape(batch, num_beams, vocab) + running_scores[:, :, None]
            ).reshape(batch, num_beams * vocab)
            # c. top-K continuations over all beams
            if config.do_sample:
                probs = _softmax64(accumulated)
                topk_idx = np.stack(
                    [
                        rng.choice(accumulated.shape[1], beams_to_keep, replace=False, p=row)
                        for row in probs
                    ]
                )
                topk_lp = np.take_along_axis(accumulated, topk_idx, 1)
                order = np.argsort(-topk_lp, axis=1, kind="stable")
                topk_lp = np.take_along_axis(topk_lp, order, 1)
                topk_idx = np.take_along_axis(topk_idx, order, 1)
            else:
                topk_idx = _topk_indices(accumulated, beams_to_keep)
                topk_lp = np.take_along_axis(accumulated, topk_idx, 1)
            parent = topk_idx // vocab
            tokens = topk_idx % vocab
            topk_running = np.take_along_axis(running, parent[:, :, None], 1)
            topk_running[:, :, cur] = tokens
            topk_indices = np.take_along_axis(running_indices, parent[:, :, None], 1)
            topk_indices[:, :, cur - prompt_length] = parent + batch_offset
            # d. which continuations stop
            hits = criteria(
                ember.from_numpy(topk_running[:, :, : cur + 1].reshape(-1, cur + 1)), None
            ).reshape(batch, beams_to_keep)
            # e. the best unfinished continue
            running_lp = topk_lp + hits.astype(np.float32) * -1.0e9
            keep = _topk_indices(running_lp, num_beams)
            running = np.take_along_axis(topk_running, keep[:, :, None], 1)
            running_scores = np.take_along_axis(running_lp, keep, 1)
            running_indices = np.take_along_axis(topk_indices, keep[:, :, None], 1)
            # f. finished ones join the pool if they are better
            just_finished = hits & top_num_beam_mask[None, :]
            finished_lp = topk_lp / np.float32((cur + 1 - prompt_length) ** length_penalty)
            full = np.all(finished, axis=-1, keepdims=True) & (early_stopping is True)
            finished_lp = finished_lp + full.astype(np.float32) * -1.0e9
            finished_lp = finished_lp + (~improvable).astype(np.float32) * -1.0e9
            finished_lp = finished_lp + (~just_finished).astype(np.float32) * -1.0e9
            merged_seq = np.concatenate([sequences, topk_running], 1)
            merged_scores = np.concatenate([beam_scores, finished_lp.astype(np.float32)], 1)
            merged_idx = np.concatenate([beam_indices, topk_indices], 1)
            merged_done = np.concatenate([finished, just_finished], 1)
            best = _topk_indices(merged_scores, num_beams)
            sequences = np.take_along_axis(merged_seq, best[:, :, None], 1)
            beam_scores = np.take_along_axis(merged_scores, best, 1)
            beam_indices = np.take_along_axis(merged_idx, best[:, :, None], 1)
            finished = np.take_along_axis(merged_done, best, 1)
            # g. the cache follows the parents of the running beams
            if cache is not None:
                cache.reorder_cache(running_indices[:, :, cur - prompt_length].reshape(-1))
            cur += 1
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_length
            else:
                best_length = cur - prompt_length
            best_running = running_scores[:, :1] / np.float32(best_length**length_penalty)
            worst_finished = np.where(finished, beam_scores.min(1, keepdims=True), -1.0e9)
            improvable = improvable & np.any(best_running > worst_finished, -1, keepdims=True)
            open_beams = not (np.all(finished) and early_stopping is True)
            if not (np.any(improvable) and open_beams and not np.all(hits)) or cur >= max_length:
                break
            flat_running = running[:, :, :cur].reshape(flat, cur)
            if use_cache:
                logits, _ = self._step(flat_running[:, -1:], full_mask, cache, config, cur)
            else:
                logits, _ = self._step(flat_running, full_mask, None, config, cur)
        returned = config.num_return_sequences
        sequences = sequences[:, :returned].reshape(batch * returned, max_length)
        beam_scores = beam_scores[:, :returned].reshape(-1)
        beam_indices = beam_indices[:, :returned].reshape(batch * returned, -1)
        generated = int(((beam_indices + 1) != 0).sum(1).max())
        sequences = sequences[:, : prompt_length + generated]
        result = ember.from_numpy(np.ascontiguousarray(sequences))
        if not config.return_dict_in_generate:
            return result
        return GenerateBeamDecoderOnlyOutput(
            sequences=result,
            sequences_scores=ember.from_numpy(beam_scores.copy()) if keep_scores else None,
            scores=tuple(scores_out) if keep_scores else None,
            logits=tuple(logits_out) if keep_logits else None,
            beam_indices=ember.from_numpy(np.ascontiguousarray(beam_indices[:, :generated])),
            past_key_values=cache,
        )


def _topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, largest first (ties: the lower index first, as
    torch.topk does on CPU in practice)."""
    if k >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    part_values = np.take_along_axis(values, part, 1)
    # stable order by (-value, index)
    order = np.lexsort((part, -part_values), axis=1)
    return np.take_along_axis(part, order, 1)


__all__ = [
    "GenerateBeamDecoderOnlyOutput",
    "GenerateDecoderOnlyOutput",
    "GenerationMixin",
]
