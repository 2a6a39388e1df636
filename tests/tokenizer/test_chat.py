"""Chat templates render exactly as transformers' ``apply_chat_template``."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models
from transformers import PreTrainedTokenizerFast

from doppler.tokenizer import ChatTemplateError, Tokenizer
from doppler.tokenizer.chat import render_chat

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi!"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "  What is 2+2?  "},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And <b>3+3</b>? Use {{ braces }} & 'quotes'."},
    ],
    [
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Second\n\nwith lines"},
        {"role": "user", "content": "Third, unicode: café 東京 🙂"},
    ],
]

# Exercises the extras transformers adds: tojson, namespace, loop controls, raise_exception,
# strftime_now, generation blocks, None-valued keys dropped, trim/lstrip of blocks.
EXTRAS_TEMPLATE = """\
{%- set ns = namespace(n=0) -%}
Today: {{ strftime_now("%Y-%m-%d") }}
{% for m in messages %}
    {% if m.role == 'skip' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    {{ m | tojson }} {{ m.get('name', 'anon') }}
    {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% endif %}
    {% if ns.n > 3 %}{% break %}{% endif %}
{% endfor %}
{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}
{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}
"""


def reference(template: str, tokens: dict[str, str]) -> PreTrainedTokenizerFast:
    """A transformers tokenizer whose only job is rendering ``template``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer(models.BPE()), chat_template=template, **tokens
    )


def assert_same(tok: Tokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> None:
    assert tok.chat_template is not None
    ref = reference(tok.chat_template, tok.spec["template_tokens"])
    for add in (True, False):
        expected = ref.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add, **kwargs
        )
        assert tok.apply_chat_template(messages, add_generation_prompt=add, **kwargs) == expected


@pytest.fixture(scope="module")
def gemma3_json(gemma3_json_spec: dict[str, Any]) -> Tokenizer:
    """Gemma 3's template comes from tokenizer_config.json (the GGUF carries none)."""
    return Tokenizer.from_spec(gemma3_json_spec)


@pytest.mark.slow
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm2_template(smollm2: Tokenizer, messages: list[dict[str, Any]]) -> None:
    assert_same(smollm2, messages)


@pytest.mark.slow
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_gemma3_template(gemma3_json: Tokenizer, messages: list[dict[str, Any]]) -> None:
    assert_same(gemma3_json, messages)
    multimodal = [
        {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages
    ]
    assert_same(gemma3_json, multimodal)


@pytest.mark.slow
def test_gemma3_raise_exception(gemma3_json: Tokenizer) -> None:
    bad = [{"role": "assistant", "content": "I speak first"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        reference(gemma3_json.chat_template or "", {}).apply_chat_template(bad, tokenize=False)
    with pytest.raises(ChatTemplateError, match="alternate"):
        gemma3_json.apply_chat_template(bad)


def test_extras_template() -> None:
    messages = [
        {"role": "system", "content": "s", "name": None},
        {"role": "skip", "content": "hidden"},
        {"role": "user", "content": '<u> & "q"', "name": "ann"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "u2"},
        {"role": "user", "content": "after break"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    ref = reference(EXTRAS_TEMPLATE, tokens)
    for add in (True, False):
        expected = ref.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add
        )
        got = render_chat(
            EXTRAS_TEMPLATE, messages, add_generation_prompt=add, tools=tools, **tokens
        )
        assert got == expected


def test_planted_bug_plain_jinja_environment() -> None:
    """Rendered without transformers' trim_blocks/lstrip_blocks, a template differs, so the
    comparisons above do check the environment's settings."""
    template = "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}"
    messages = [{"role": "user", "content": "x"}]
    expected = reference(template, {}).apply_chat_template(messages, tokenize=False)
    assert render_chat(template, messages) == expected
    assert jinja2.Template(template).render(messages=messages) != expected


def test_errors() -> None:
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_chat(None, [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="syntax error"):
        render_chat("{% for %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="empty"):
        render_chat("x", [])
    with pytest.raises(ChatTemplateError):  # the sandbox refuses attribute escapes
        render_chat("{{ messages.__class__.__mro__ }}", [{"role": "user", "content": "x"}])
