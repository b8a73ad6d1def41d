"""Our Go text/template interpreter against the language as Go documents it."""

from __future__ import annotations

from typing import Any

import pytest

from trio_llm.prompt.budget import Budget
from trio_llm.prompt.errors import TemplateFailed
from trio_llm.prompt.gotemplate import execute, parse


def render(source: str, data: Any = None) -> str:
    return execute(parse(source), data, Budget().start())


@pytest.mark.parametrize(("value", "shown"), [
    (False, "no"), (True, "yes"), (0, "no"), (7, "yes"), (0.0, "no"), ("", "no"), ("x", "yes"),
    ([], "no"), ([0], "yes"), ({}, "no"), ({"k": 0}, "yes"), (None, "no"),
])
def test_truth_is_gos_empty_values_are_false(value: Any, shown: str) -> None:
    assert render("{{ if .v }}yes{{ else }}no{{ end }}", {"v": value}) == shown


def test_range_over_a_slice_with_index_and_element_and_else() -> None:
    template = "{{ range $i, $m := .items }}{{ $i }}={{ $m }};{{ else }}empty{{ end }}"
    assert render(template, {"items": ["a", "b"]}) == "0=a;1=b;"
    assert render(template, {"items": []}) == "empty"
    assert render(template, {}) == "empty"       # nil ranges over nothing


def test_range_over_a_map_goes_in_key_order_one_variable_is_the_value() -> None:
    data = {"m": {"b": 2, "a": 1, "c": 3}}
    assert render("{{ range $k, $v := .m }}{{ $k }}{{ $v }}{{ end }}", data) == "a1b2c3"
    assert render("{{ range $v := .m }}{{ $v }}{{ end }}", data) == "123"
    assert render("{{ range .m }}{{ . }}{{ end }}", data) == "123"


def test_range_over_an_integer_and_break_and_continue() -> None:
    assert render("{{ range 4 }}{{ . }}{{ end }}") == "0123"
    template = ("{{ range $i := 6 }}{{ if eq $i 1 }}{{ continue }}{{ end }}"
                "{{ if eq $i 4 }}{{ break }}{{ end }}{{ $i }}{{ end }}")
    assert render(template) == "023"


def test_with_moves_dot_and_else_with_chains() -> None:
    template = "{{ with .a }}a:{{ . }}{{ else with .b }}b:{{ . }}{{ else }}none{{ end }}"
    assert render(template, {"a": "x"}) == "a:x"
    assert render(template, {"b": "y"}) == "b:y"
    assert render(template, {}) == "none"


def test_if_else_if_chains_share_one_end() -> None:
    template = '{{ if eq .r "a" }}A{{ else if eq .r "b" }}B{{ else }}C{{ end }}'
    assert [render(template, {"r": r}) for r in "abz"] == ["A", "B", "C"]


def test_variables_are_scoped_to_their_structure_and_assignment_reaches_outwards() -> None:
    template = ('{{ $x := "outer" }}{{ if true }}{{ $x = "set" }}{{ $y := 1 }}{{ end }}'
                "{{ $x }}{{ range 2 }}{{ $x = . }}{{ end }} {{ $x }}")
    assert render(template) == "set 1"
    with pytest.raises(TemplateFailed, match='undefined variable "\\$y"'):
        parse("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_dollar_is_the_root_inside_any_structure() -> None:
    data = {"name": "root", "items": [{"name": "inner"}]}
    assert render("{{ range .items }}{{ .name }}/{{ $.name }}{{ end }}", data) == "inner/root"
    assert render("{{ range $i, $_ := .items }}{{ len (slice $.items $i) }}{{ end }}",
                  data) == "1"


def test_trim_markers_remove_white_space_on_their_side_only() -> None:
    assert render("a \n {{- 1 }} \n b") == "a1 \n b"
    assert render("a \n {{ 1 -}} \n b") == "a \n 1b"
    assert render("{{- 3 -}}") == "3"
    assert render("{{-3}}") == "-3"          # no space: a negative number, not a trim marker


def test_comments_are_dropped_and_may_trim() -> None:
    assert render("a {{/* note */}} b") == "a  b"
    assert render("a {{- /* multi\nline */ -}} b") == "ab"


def test_pipelines_pass_the_value_as_the_last_argument() -> None:
    assert render('{{ "abc" | len }}') == "3"
    assert render('{{ 3 | printf "%d-%s" "x" }}') == "%!d(string=x)-%!s(int=3)"
    assert render('{{ "x" | printf "%s!" }}') == "x!"
    assert render("{{ .a | eq 1 }}", {"a": 1}) == "true"


def test_and_or_return_the_deciding_argument_and_stop_early() -> None:
    assert render("{{ and 1 0 2 }}|{{ and 1 2 }}|{{ or 0 \"\" 3 }}|{{ or 0 \"\" }}") == \
        "0|2|3|"
    # the right side is not evaluated once the left decides (it would fail on nil)
    assert render("{{ if and .m (index .m 0) }}yes{{ else }}no{{ end }}", {"m": None}) == "no"


def test_comparisons() -> None:
    assert render('{{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }}'
                  " {{ ge 1.5 2.5 }} {{ not 0 }}") == "true true true true true false true"
    with pytest.raises(TemplateFailed, match="incompatible types for comparison"):
        render('{{ eq 1 "1" }}')


def test_len_index_and_slice() -> None:
    data = {"s": "héllo", "l": [1, 2, 3], "m": {"k": "v"}}
    assert render("{{ len .s }} {{ len .l }} {{ len .m }}", data) == "6 3 1"   # bytes, as Go
    assert render('{{ index .l 1 }} {{ index .m "k" }} {{ index .m "x" }}', data) == \
        "2 v <no value>"
    assert render("{{ slice .l 1 }} {{ slice .l 0 2 }} {{ slice .s 0 1 }}", data) == \
        "[2 3] [1 2] h"
    with pytest.raises(TemplateFailed, match="index out of range: 5"):
        render("{{ index .l 5 }}", data)


def test_print_printf_html_and_json() -> None:
    assert render('{{ print 1 2 "a" "b" 3 }}') == "1 2ab3"
    assert render('{{ printf "%5.2f|%-4s|%03d|%q|%v|%x" 3.14159 "ab" 7 "q" .l 255 }}',
                  {"l": [1, "a"]}) == ' 3.14|ab  |007|"q"|[1 a]|ff'
    assert render('{{ html "<a href=\'x\'>&" }}') == "&lt;a href=&#39;x&#39;&gt;&amp;"
    assert render("{{ json . }}", {"b": [1, 2.5, None, "<x>"], "a": True}) == \
        '{"a":true,"b":[1,2.5,null,"\\u003cx\\u003e"]}'


def test_ollamas_functions() -> None:
    from trio_llm.prompt.go_values import tools

    data = {"Tools": tools([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": ["string", "null"]}, "b": {},
                                         "c": {"anyOf": [{"type": "integer"},
                                                         {"type": "array"}]}}}}}])}
    template = ("{{ range .Tools }}{{ range $k, $p := .Function.Parameters.Properties }}"
                "{{ $k }}: {{ toTypeScriptType $p }}; {{ end }}{{ end }}")
    assert render(template, data) == "a: string | null; b: any; c: number | any[]; "
    assert len(render("{{ currentDate }}")) == 10


def test_go_number_and_string_literals() -> None:
    assert render("{{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 1_000 }} {{ 1e3 }} {{ 2.50 }} {{ 'a' }}") \
        == "31 15 15 1000 1000 2.5 97"
    assert render('{{ "tab\\there" }}|{{ `raw\\n` }}') == "tab\there|raw\\n"


def test_printing_follows_fmt() -> None:
    data = {"f": 1000000.0, "m": {"b": [1, 2], "a": None}, "n": None}
    assert render("{{ .f }} {{ .m }} {{ .n }} {{ .missing }}", data) == \
        "1e+06 map[a:<nil> b:[1 2]] <no value> <no value>"


@pytest.mark.parametrize(("source", "where", "message"), [
    ("{{ if .X }}", "line 1, column 1", "{{if}} has no {{end}}"),
    ("a\n\n  {{ end }}", "line 3, column 3", "unexpected {{end}}"),
    ("x\n  {{ .A | 3 }}", "line 2, column 11", "non executable command in pipeline stage 2"),
    ("{{ $y }}", "line 1, column 4", 'undefined variable "$y"'),
    ("{{\n  foo .X }}", "line 2, column 3", 'function "foo" not defined'),
    ("{{ range .X }}{{ else if .Y }}{{ end }}", "line 1, column 23", "{{else if}} inside"),
    ("{{ break }}", "line 1, column 1", "{{break}} outside {{range}}"),
    ("{{ (1 }}", "line 1, column 4", "unclosed left paren"),
    ("{{ .A", "line 1, column 1", "unclosed action"),
    ('{{ "abc }}', "line 1, column 4", "unterminated quoted string"),
    ("{{/* x }}", "line 1, column 1", "unclosed comment"),
    ("{{ template \"x\" }}", "line 1, column 1", "{{template}} is not supported"),
    ("{{ .A .B | }}", "line 1, column 10", "missing value for command"),
])
def test_malformed_templates_fail_naming_the_line_and_column(source: str, where: str,
                                                             message: str) -> None:
    with pytest.raises(TemplateFailed) as failure:
        parse(source)
    assert f"template error: {where}: " in failure.value.message
    assert message in failure.value.message


def test_errors_while_rendering_name_the_action() -> None:
    with pytest.raises(TemplateFailed, match=r"line 2, column 4: nil pointer evaluating "
                                             r"interface \{\}\.B"):
        render("ok\n{{ .A.B }}", {"A": None})
    with pytest.raises(TemplateFailed, match="line 1, column 10: range can't iterate over abc"):
        render('{{ range "abc" }}{{ end }}')


def test_no_python_object_is_reachable() -> None:
    for source in ("{{ .__class__ }}", "{{ .items }}", "{{ .get }}"):
        assert render(source, {"k": 1}) == "<no value>"    # map keys only, never attributes
