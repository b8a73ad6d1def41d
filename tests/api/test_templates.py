"""Prompt rendering: Hugging Face style chat templates in Jinja's sandbox, and the fallbacks."""

from __future__ import annotations

import pytest

from trio_llm.api.templates import (
    TemplateFailed,
    as_jinja,
    go_to_jinja,
    is_go_template,
    render_chat,
    render_generate,
    uses_variable,
)

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chatml_template_renders_messages_and_generation_prompt() -> None:
    text = render_chat(CHATML, [{"role": "user", "content": "Hi"}])
    assert text == ("<|im_start|>system\nYou are helpful.<|im_end|>\n"
                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_add_generation_prompt_false_leaves_the_assistant_turn_out() -> None:
    text = render_chat(CHATML, [{"role": "system", "content": "S"}],
                       add_generation_prompt=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n"


def test_bos_eos_tools_and_tojson_are_available() -> None:
    template = "{{ bos_token }}{{ tools | tojson }}{% for m in messages %}{{ m.content }}" \
               "{{ eos_token }}{% endfor %}"
    tools = [{"type": "function", "function": {"name": "get_weather", "city": "Zürich"}}]
    text = render_chat(template, [{"role": "user", "content": "x"}], bos_token="<s>",
                       eos_token="</s>", tools=tools)
    assert text == '<s>[{"type": "function", "function": {"name": "get_weather", ' \
                   '"city": "Zürich"}}]x</s>'


def test_raise_exception_becomes_a_bad_request_with_its_message() -> None:
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(TemplateFailed, match="Conversation roles must alternate"):
        render_chat(template, [{"role": "user", "content": "x"}])


@pytest.mark.parametrize("hostile", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% set x = messages.append(1) %}",
    "{{ messages.pop() }}",
    "{{ 'x' * 10**12 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ '{0.__class__.__mro__}'.format(messages) }}",
])
def test_hostile_templates_fail_cleanly_without_running_code(hostile: str) -> None:
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(TemplateFailed) as failure:
        render_chat(hostile, messages)
    assert failure.value.message.startswith("template error")
    assert messages == [{"role": "user", "content": "x"}]


def test_format_string_attribute_lookups_see_nothing_private() -> None:
    assert render_chat("{{ '{0.__class__}'.format(messages) }}", []) == ""


def test_syntax_error_names_the_problem() -> None:
    with pytest.raises(TemplateFailed, match="line 1"):
        render_chat("{% if %}", [])


def test_chat_without_template_joins_contents() -> None:
    assert render_chat("", [{"role": "system", "content": "S"},
                            {"role": "user", "content": "U"}]) == "S\n\nU"


def test_generate_without_template_is_the_prompt_with_system_prepended() -> None:
    assert render_generate("", "Why?") == "Why?"
    assert render_generate("", "Why?", system="Be brief.") == "Be brief.\n\nWhy?"


def test_generate_uses_the_chat_template_with_one_user_message() -> None:
    text = render_generate(CHATML, "Why?", system="Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n")


def test_generate_offers_prompt_and_suffix_to_fill_in_the_middle_templates() -> None:
    template = "<PRE>{{ prompt }}<SUF>{{ suffix }}<MID>"
    assert uses_variable(template, "suffix")
    assert not uses_variable(CHATML, "suffix")
    assert render_generate(template, "def f(", suffix="return 1") == \
        "<PRE>def f(<SUF>return 1<MID>"


def test_simple_go_templates_are_translated() -> None:
    go = ("{{ if .System }}<|system|>{{ .System }}{{ end }}\n<|user|>\n{{- .Prompt -}}\n"
          "<|assistant|>{{ .Response }}<|end|>")
    assert is_go_template(go) and not is_go_template(CHATML)
    jinja = go_to_jinja(go)
    assert render_generate(jinja, "Hi", system="S") == "<|system|>S\n<|user|>Hi<|assistant|>"
    assert render_generate(jinja, "Hi") == "\n<|user|>Hi<|assistant|>"
    assert as_jinja("{{ .Prompt }}") == "{{ prompt }}"
    assert as_jinja(CHATML) == CHATML


def test_go_template_literal_text_is_not_interpreted_as_jinja() -> None:
    jinja = go_to_jinja("{% raw %} {# x #} {{ .Prompt }}")
    assert render_generate(jinja, "P") == "{% raw %} {# x #} P"


def test_rich_go_templates_are_refused_with_a_hint() -> None:
    with pytest.raises(TemplateFailed, match="unsupported Go template action"):
        go_to_jinja("{{ range .Messages }}{{ .Content }}{{ end }}")
