"""One error hierarchy: the store's and the scheduler's errors have bases of their own, and
every failure a client's model file causes (architecture, tensors, tokenizer, bytes) is a 400
carrying its real message, through the API's one status map."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_llm.api.errors import status_and_message
from trio_llm.engine.model import Model, check_model_file
from trio_llm.errors import ModelFileError, QueueFull
from trio_llm.formats.gguf_file import read_gguf
from trio_llm.nursery.errors import LoadTimeout, SchedulerError, StepFailed
from trio_llm.store.errors import CorruptStore, ModelNotFound, NotGGUF, StoreError
from trio_llm.testing.tiny_gguf import TinyModel, byte_vocabulary, tiny_llama


def test_except_store_error_does_not_catch_queue_full_or_scheduler_errors():
    for error in (QueueFull(), LoadTimeout("m", 1.0), StepFailed("boom")):
        with pytest.raises(type(error)):
            try:
                raise error
            except StoreError:
                pytest.fail(f"StoreError caught {type(error).__name__}")
    assert not issubclass(StoreError, SchedulerError)
    assert not issubclass(SchedulerError, StoreError)


def test_store_errors_keep_their_http_status_under_their_own_base():
    assert status_and_message(ModelNotFound("x")) == (404, "model 'x' not found")
    assert status_and_message(NotGGUF())[0] == 400
    assert status_and_message(CorruptStore("manifest does not parse"))[0] == 500
    assert all(isinstance(e, StoreError) for e in (ModelNotFound("x"), NotGGUF(),
                                                   CorruptStore("c")))


def without(model: TinyModel, tensor: str) -> TinyModel:
    del model._tensors[tensor]
    return model


def checked(path: Path) -> frozenset[str]:
    with read_gguf(path) as gguf:
        return check_model_file(gguf)


BAD_FILES = {
    "an unknown architecture": (lambda: TinyModel("mamba", byte_vocabulary()),
                                "mamba"),
    "a missing tensor": (lambda: without(tiny_llama(), "blk.0.ffn_down.weight"),
                         "blk.0.ffn_down.weight"),
    "an unknown tokenizer": (lambda: tiny_llama({**byte_vocabulary(),
                                                 "tokenizer.ggml.model": "klingon"}),
                             "klingon"),
    "rope wider than a head": (lambda: tiny_llama().meta("rope.dimension_count", 1024),
                               "rope dimension 1024"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_model_file_we_cannot_run_is_a_400_with_its_cause(case: str, tmp_path: Path):
    build, cause = BAD_FILES[case]
    path = build().write(tmp_path / "bad.gguf")
    for attempt in (lambda: checked(path), lambda: Model.load(path)):
        with pytest.raises(ModelFileError) as failure:
            attempt()
        status, message = status_and_message(failure.value)
        assert status == 400 and cause in message, (case, message)


def test_bytes_that_are_not_gguf_are_a_400_with_the_readers_words(tmp_path: Path):
    path = tiny_llama().write(tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError) as failure:
        Model.load(path)
    status, message = status_and_message(failure.value)
    assert status == 400 and message and str(tmp_path) not in message
