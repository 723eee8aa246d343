"""Sentence embeddings, sentence-transformers style: the token vectors of the last layer,
averaged over the attention mask (padding excluded), then L2-normalised. This is how
all-MiniLM-L6-v2 is meant to be used (its `1_Pooling` folder says mean pooling).
"""

from __future__ import annotations

import ember
from ember.nn import functional as F


def mean_pooling(last_hidden_state, attention_mask):
    """Average the (batch, seq, hidden) vectors over positions where the mask is 1.

    Example:
        >>> import ember
        >>> h = ember.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
        >>> mean_pooling(h, ember.tensor([[1, 1, 0]])).tolist()
        [[2.0, 3.0]]
    """
    mask = ember.as_tensor(attention_mask).to(last_hidden_state.dtype).unsqueeze(-1)
    summed = (last_hidden_state * mask).sum(1)
    counts = mask.sum(1).clamp(min=1e-9)
    return summed / counts


def encode_sentences(
    model,
    tokenizer,
    sentences,
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int | None = None,
):
    """Embed a list of sentences: tokenize (padding, truncation), run the encoder without
    gradients, mean-pool, and L2-normalise. Returns an ember Tensor (n, hidden).

    Args:
        model: a `BertModel` (or any encoder returning `last_hidden_state`).
        tokenizer: the matching tokenizer.
        sentences: a str or a list of str.
        batch_size: sentences per forward pass.
        normalize: L2-normalise each embedding (cosine similarity becomes a dot product).
        max_length: truncation length (default: the tokenizer's model_max_length).
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if not sentences:
        raise ValueError("encode_sentences: got no sentences")
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with ember.no_grad():
            for start in range(0, len(sentences), batch_size):
                batch = tokenizer(
                    list(sentences[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="ember",
                )
                out = model(**batch)
                pooled = mean_pooling(out.last_hidden_state, batch["attention_mask"])
                chunks.append(F.normalize(pooled, p=2, dim=1) if normalize else pooled)
    finally:
        model.train(was_training)
    return ember.cat(chunks, 0) if len(chunks) > 1 else chunks[0]
