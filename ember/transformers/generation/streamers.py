"""Streamers: `generate(..., streamer=s)` calls `s.put(ids)` with the prompt, then with each new
token, and `s.end()` at the end. `TextStreamer` prints words as they complete;
`TextIteratorStreamer` hands them to another thread through a queue (HuggingFace's API and
printing rules: text is released up to the last space, whole at a newline or a CJK character).
"""

from __future__ import annotations

import unicodedata
from queue import Queue

import numpy as np

import ember


class BaseStreamer:
    """The interface `generate()` talks to."""

    def put(self, value):
        raise NotImplementedError

    def end(self):
        raise NotImplementedError


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class TextStreamer(BaseStreamer):
    """Decode tokens as they come and print whole words to stdout.

    Args:
        tokenizer: anything with `decode(list_of_ids, **decode_kwargs) -> str`.
        skip_prompt: do not print the prompt (the first `put`).
        decode_kwargs: passed to `decode` (e.g. skip_special_tokens=True).
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value):
        value = np.asarray(value.numpy(force=True) if isinstance(value, ember.Tensor) else value)
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError(f"{type(self).__name__} only supports batch size 1")
        if value.ndim > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.print_len :]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif text and _is_cjk(ord(text[-1])):
            printable = text[self.print_len :]
            self.print_len += len(printable)
        elif all(
            c.isspace() or unicodedata.category(c)[0] in "LMN" for c in text[self.print_len :]
        ):
            printable = text[self.print_len :]
            self.print_len += len(printable)
        else:
            printable = text[self.print_len : text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self):
        """Flush what is left and end the line."""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            printable = text[self.print_len :]
            self.token_cache = []
            self.print_len = 0
        else:
            printable = ""
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """Like `TextStreamer`, but iterating over it yields the text pieces (run `generate` in
    another thread). `timeout` (seconds) bounds each wait; it raises `queue.Empty`.

    Example (`model` and `tokenizer` loaded from a folder, `ids` the prompt):
        >>> from threading import Thread
        >>> streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)  # doctest: +SKIP
        >>> kwargs = dict(inputs=ids, streamer=streamer, max_new_tokens=20)  # doctest: +SKIP
        >>> Thread(target=model.generate, kwargs=kwargs).start()  # doctest: +SKIP
        >>> text = "".join(streamer)  # doctest: +SKIP
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **kw):
        super().__init__(tokenizer, skip_prompt, **kw)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self):
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        return value
