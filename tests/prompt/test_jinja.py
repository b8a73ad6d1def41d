"""Jinja chat templates (Hugging Face style) in the sandbox, and the default template."""

from __future__ import annotations

import pytest

from trio_llm.prompt import Dialect, TemplateFailed, chat, generate, load

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chatml_template_renders_messages_and_generation_prompt() -> None:
    text = chat(load(CHATML), [{"role": "user", "content": "Hi"}])
    assert load(CHATML).dialect is Dialect.JINJA
    assert text == ("<|im_start|>system\nYou are helpful.<|im_end|>\n"
                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_a_final_assistant_message_is_continued_not_closed() -> None:
    text = chat(load(CHATML), [{"role": "system", "content": "S"},
                               {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hel"}])
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHel")


def test_consecutive_messages_of_one_role_are_joined_with_a_blank_line() -> None:
    text = chat(load(CHATML), [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert "<|im_start|>user\na\n\nb<|im_end|>" in text


def test_bos_eos_tools_and_tojson_are_available() -> None:
    template = "{{ bos_token }}{{ tools | tojson }}{% for m in messages %}{{ m.content }}" \
               "{{ eos_token }}{% endfor %}"
    tools = [{"type": "function", "function": {"name": "get_weather", "city": "Zürich"}}]
    text = chat(load(template), [{"role": "user", "content": "x"}], bos_token="<s>",
                eos_token="</s>", tools=tools)
    assert text == '<s>[{"type": "function", "function": {"name": "get_weather", ' \
                   '"city": "Zürich"}}]x</s>'


def test_raise_exception_becomes_a_bad_request_with_its_message() -> None:
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(TemplateFailed, match="Conversation roles must alternate"):
        chat(load(template), [{"role": "user", "content": "x"}])


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
        chat(load(hostile), messages)
    assert failure.value.message.startswith("template error")
    assert messages == [{"role": "user", "content": "x"}]


def test_format_string_attribute_lookups_see_nothing_private() -> None:
    assert chat(load("{% if 1 %}{{ '{0.__class__}'.format(messages) }}{% endif %}"), []) == ""


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateFailed, match="line 2"):
        load("ok\n{% if %}")


def test_without_a_template_the_prompt_goes_in_as_it_is() -> None:
    """Ollama's default template is `{{ .Prompt }}`: the prompt, no system, no separators."""
    assert generate(load(""), "Why?") == "Why?"
    assert generate(load(""), "Why?", system="Be brief.") == "Why?"
    assert chat(load(""), [{"role": "user", "content": "U1"},
                           {"role": "assistant", "content": "A1"},
                           {"role": "user", "content": "U2"}]) == "U1A1U2"


def test_generate_uses_the_chat_template_with_one_user_message() -> None:
    text = generate(load(CHATML), "Why?", system="Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n")


def test_generate_offers_prompt_and_suffix_to_fill_in_the_middle_templates() -> None:
    template = "<PRE>{{ prompt }}<SUF>{{ suffix }}<MID>"
    assert "insert" in load(template).capabilities
    assert "insert" not in load(CHATML).capabilities
    assert generate(load(template), "def f(", suffix="return 1") == \
        "<PRE>def f(<SUF>return 1<MID>"


def test_jinja_capabilities_follow_from_what_the_template_reads() -> None:
    tools = load("{% if tools %}{{ tools | tojson }}{% endif %}{{ messages[0].content }}")
    thinking = load("{% for m in messages %}{{ m.reasoning_content }}{% endfor %}")
    assert tools.capabilities == {"tools"} and thinking.capabilities == {"thinking"}
    assert load(CHATML).capabilities == frozenset()


def test_the_template_layer_renders_and_the_gguf_jinja_only_without_one() -> None:
    from trio_llm.prompt import template_source

    assert template_source("{{ .Prompt }}", CHATML) == "{{ .Prompt }}"
    assert template_source("", CHATML) == ""            # an empty layer: Ollama's default
    assert template_source(None, CHATML) == CHATML     # no layer: the GGUF's own template


def test_bos_and_eos_texts_come_from_the_vocabulary() -> None:
    from trio_llm.prompt import special_tokens

    info = {"tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    assert special_tokens(info) == ("<s>", "</s>")
    assert special_tokens({"tokenizer.ggml.bos_token_id": 9}) == ("", "")
