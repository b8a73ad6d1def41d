"""The option table is the one owner of every option's name, type, default and range: the
sampler, the scheduler's LoadSpec, the API, the Modelfile parser and config read it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from trio_llm import config
from trio_llm.api.schemas import parse_options
from trio_llm.engine.sampler import SamplerOptions
from trio_llm.errors import BadRequest, InvalidParameter
from trio_llm.formats.params import PARAMETER_TYPES, parse_value
from trio_llm.limits import check_options
from trio_llm.nursery import LOAD_OPTIONS, LoadSpec
from trio_llm.options import OPTIONS, Part, names


def test_sampler_options_are_the_tables_sampler_options_with_its_defaults():
    assert tuple(f.name for f in fields(SamplerOptions)) == names(Part.SAMPLER)
    assert all(f.default == OPTIONS[f.name].default for f in fields(SamplerOptions))


def test_load_spec_carries_every_load_option_with_the_tables_defaults():
    spec_fields = {f.name: f for f in fields(LoadSpec)}
    for name in names(Part.LOAD, Part.THREADS):
        assert name == "num_ctx" or spec_fields[name].default == OPTIONS[name].default
    assert LOAD_OPTIONS == names(Part.LOAD)


def test_the_default_context_length_is_num_ctx_default():
    assert config.get("OLLAMA_CONTEXT_LENGTH", environ={}) == OPTIONS["num_ctx"].default


def test_every_modelfile_parameter_is_a_table_option_and_constraints_are_not_parameters():
    assert set(PARAMETER_TYPES) == {o.name for o in OPTIONS.values() if o.in_modelfiles}
    with pytest.raises(InvalidParameter, match="unknown parameter 'grammar'"):
        parse_value("grammar", "root ::= x")


@pytest.mark.parametrize("name", [o.name for o in OPTIONS.values() if o.in_requests])
def test_a_request_option_of_the_wrong_type_is_a_400_naming_it(name: str):
    with pytest.raises(BadRequest, match=f'option "{name}" must be of type'):
        parse_options({name: {"not": "a value"}})


@pytest.mark.parametrize("name", [o.name for o in OPTIONS.values()
                                  if o.low is not None or o.high is not None])
def test_a_request_option_out_of_its_range_is_a_400_naming_it(name: str):
    option = OPTIONS[name]
    value = option.low - 1 if option.low is not None else option.high + 1
    with pytest.raises(BadRequest, match=f'option "{name}" must be'):
        check_options({name: value})


def test_draft_tokens_without_draft_models_are_a_400_naming_the_option():
    """We run no draft models, so asking for drafted tokens is refused, not ignored."""
    assert check_options({"draft_num_predict": 0}) == {"draft_num_predict": 0}
    with pytest.raises(BadRequest, match='option "draft_num_predict" must be between 0 and 0'):
        check_options({"draft_num_predict": 4})
