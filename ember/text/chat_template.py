"""Chat templates: a conversation (a list of {"role", "content"} dicts) -> the prompt text.

Note [Chat templates]: a chat model's prompt format is a Jinja template shipped with its
tokenizer (tokenizer_config.json's `chat_template`, a `chat_template.jinja` file, or a GGUF's
`tokenizer.chat_template`). It is rendered as HuggingFace transformers renders it, so the same
template gives the same text:
- in Jinja's immutable sandbox (a template cannot reach Python internals or mutate its inputs),
  with `trim_blocks` and `lstrip_blocks` on and the `loopcontrols` extension;
- with the variables `messages`, `tools`, `documents`, `add_generation_prompt`, the
  tokenizer's special tokens (`bos_token`, `eos_token`, ...) and any extra keyword argument;
- with HuggingFace's helpers: `raise_exception(message)`, `strftime_now(format)`, a `tojson`
  filter that keeps non-ASCII text (`ensure_ascii=False`), and a `{% generation %}` block tag
  that renders its body as is.
`jinja2` is imported on first use (the `llm` extra), never by `import ember`. Compiled
templates are cached by their source text.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

__all__ = ["render_chat_template", "require_jinja2"]


def require_jinja2():
    """The `jinja2` module, or an error saying how to install it."""
    try:
        import jinja2
    except ImportError:
        raise ImportError(
            "apply_chat_template needs jinja2 to render the chat template: "
            "pip install 'ember[llm]' (or pip install jinja2)"
        ) from None
    return jinja2


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    jinja2 = require_jinja2()
    from jinja2 import ext, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's part; rendered as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(
                lineno
            )

        def _render_body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    def strftime_now(format):
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    try:
        return environment.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise ValueError(
            f"apply_chat_template: the chat template does not parse (line {error.lineno}: "
            f"{error.message})"
        ) from None


def _check_conversation(conversation, where: str) -> list[dict]:
    if hasattr(conversation, "messages"):
        conversation = conversation.messages
    if not isinstance(conversation, (list, tuple)):
        raise TypeError(
            f"{where}: expected a conversation (a list of message dicts), got "
            f"{type(conversation).__name__}"
        )
    messages = []
    for index, message in enumerate(conversation):
        if not isinstance(message, dict):
            raise TypeError(
                f"{where}: message {index} should be a dict with 'role' and 'content', got "
                f"{type(message).__name__}: {str(message)[:80]!r}"
            )
        messages.append(dict(message))
    return messages


def render_chat_template(
    template: str,
    conversation,
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    tools=None,
    documents=None,
    where: str = "apply_chat_template",
    **variables,
) -> str:
    """The prompt text of one conversation (Note [Chat templates]).

    Example:
        >>> render_chat_template(
        ...     "{% for m in messages %}<{{ m.role }}>{{ m.content }}\\n{% endfor %}"
        ...     "{% if add_generation_prompt %}<assistant>{% endif %}",
        ...     [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        '<user>Hi\\n<assistant>'
    """
    jinja2 = require_jinja2()
    messages = _check_conversation(conversation, where)
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, dict):
                raise TypeError(
                    f"{where}: each tool should be a JSON-schema dict, got {type(tool).__name__}"
                )
    if documents is not None:
        for document in documents:
            if not isinstance(document, dict):
                raise TypeError(
                    f"{where}: each document should be a dict with 'title' and 'text', got "
                    f"{type(document).__name__}"
                )
    tag = "CONTINUE_FINAL_MESSAGE_TAG "
    final = None
    if continue_final_message:
        if not messages or not isinstance(messages[-1].get("content"), str):
            raise ValueError(
                f"{where}: continue_final_message=True needs a final message with text content"
            )
        final = messages[-1]["content"]
        messages[-1]["content"] = final + tag
    compiled = _compile(template)
    try:
        text = compiled.render(
            messages=messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.exceptions.TemplateError as error:
        raise ValueError(f"{where}: the chat template failed: {error}") from None
    if continue_final_message:
        if final.strip() not in text or tag.strip() not in text:
            raise ValueError(
                f"{where}: continue_final_message=True, but the template dropped part of the "
                "final message, so it cannot be continued"
            )
        cut = text.rindex(tag.strip())
        text = text[:cut] if text[cut : cut + len(tag)] == tag else text[:cut].rstrip()
    return text
