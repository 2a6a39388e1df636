"""Chat templates rendered the way transformers' ``apply_chat_template`` renders them.

Templates come from model files, i.e. untrusted: they run in jinja2's immutable sandbox with
the same globals and filters transformers provides, so a template behaves identically here.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from .errors import ChatTemplateError


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2  # only chat needs jinja2 (a separate wheel in the browser)
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}`` marks assistant text for training masks; rendering keeps it."""

        tags = {"generation"}  # noqa: RUF012 - jinja2's API

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"chat_template: syntax error at line {exc.lineno}: {exc.message}"
        ) from exc


def render_chat(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Render ``messages``; ``variables`` are bos_token, eos_token, tools, etc."""
    if template is None:
        raise ChatTemplateError("chat_template: this model has no chat template")
    if not messages:
        raise ChatTemplateError("messages: empty conversation")
    if not all(isinstance(m, dict) for m in messages):
        raise ChatTemplateError("messages: each message must be an object")
    # transformers drops None-valued keys (e.g. content=None from OpenAI-style APIs).
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    import jinja2

    compiled = _compile(template)
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    try:
        return compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **variables
        )
    except jinja2.exceptions.TemplateError as exc:
        raise ChatTemplateError(f"chat_template: {exc}") from exc
