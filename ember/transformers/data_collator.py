"""Data collators: turn lists of tokenized examples into padded model batches.

`DataCollatorForLanguageModeling` does BERT's masking: of the non-special tokens, each is
chosen with probability `mlm_probability` (15%); a chosen token becomes [MASK] 80% of the
time, a random token 10%, and stays 10%; labels are the original ids where chosen, -100
elsewhere (ignored by the loss).
"""

from __future__ import annotations

import numpy as np

import ember

_PASS_THROUGH = ("next_sentence_label", "labels", "label")


class DataCollatorForLanguageModeling:
    """Pad a list of examples (dicts with `input_ids`, optional `token_type_ids` and
    `next_sentence_label`) and mask them for masked-language modelling.

    Args:
        tokenizer: gives the pad, mask and special-token ids and the vocabulary size.
        mlm: mask tokens (True) or only pad and copy input_ids to labels (False).
        mlm_probability: chance that a token is chosen for prediction.
        seed: seeds this collator's own NumPy generator (reproducible masking).
        return_tensors: 'ember' or 'np'.
    """

    def __init__(
        self,
        tokenizer,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        seed: int | None = None,
        return_tensors: str = "ember",
    ):
        if mlm and tokenizer.mask_token_id is None:
            raise ValueError(
                "DataCollatorForLanguageModeling: the tokenizer has no mask token; "
                "pass mlm=False or a tokenizer with one"
            )
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(
                f"DataCollatorForLanguageModeling: mlm_probability must be in "
                f"(0, 1), got {mlm_probability}"
            )
        if return_tensors not in ("ember", "np"):
            raise ValueError(
                f"DataCollatorForLanguageModeling: return_tensors must be 'ember' "
                f"or 'np', got {return_tensors!r}"
            )
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        self.return_tensors = return_tensors
        self.rng = np.random.default_rng(seed)
        self.special_ids = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)

    def __call__(self, examples: list) -> dict:
        if not examples:
            raise ValueError("DataCollatorForLanguageModeling: got an empty list of examples")
        ids = [list(e["input_ids"]) for e in examples]
        length = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), length), pad, dtype=np.int64)
        attention_mask = np.zeros((len(ids), length), dtype=np.int64)
        token_type_ids = np.zeros((len(ids), length), dtype=np.int64)
        for row, example in enumerate(examples):
            n = len(ids[row])
            input_ids[row, :n] = ids[row]
            attention_mask[row, :n] = 1
            if "token_type_ids" in example:
                token_type_ids[row, :n] = list(example["token_type_ids"])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        if self.mlm:
            batch["input_ids"], batch["labels"] = self.mask_tokens(input_ids, attention_mask)
        else:
            batch["labels"] = np.where(attention_mask == 1, input_ids, -100)
        for key in _PASS_THROUGH:
            if key in examples[0] and key not in batch:
                batch[key] = np.asarray([e[key] for e in examples], dtype=np.int64)
        if self.return_tensors == "ember":
            batch = {k: ember.from_numpy(v) for k, v in batch.items()}
        return batch

    def mask_tokens(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        """(masked input ids, labels) for a padded (batch, seq) id array."""
        candidates = (attention_mask == 1) & ~np.isin(input_ids, self.special_ids)
        chosen = candidates & (self.rng.random(input_ids.shape) < self.mlm_probability)
        labels = np.where(chosen, input_ids, -100)
        masked = input_ids.copy()
        draw = self.rng.random(input_ids.shape)
        to_mask = chosen & (draw < 0.8)
        to_random = chosen & (draw >= 0.8) & (draw < 0.9)
        masked[to_mask] = self.tokenizer.mask_token_id
        vocab = len(self.tokenizer)
        masked[to_random] = self.rng.integers(0, vocab, size=int(to_random.sum()))
        return masked, labels
