"""The tokenizer a GGUF file describes: text <-> token ids, special tokens, stop tokens.

`Tokenizer.from_metadata` reads the `tokenizer.ggml.*` keys and picks the algorithm:
byte-level BPE for "gpt2" (SmolLM2, Llama 3, Qwen 2), SentencePiece-style scored BPE for
"llama" (Gemma, Llama 2) or WordPiece for "bert" (BERT encoders: [CLS] text [SEP]). Control
tokens such as <|im_start|> are recognised in the input as whole strings (when
`parse_special`), never built from pieces.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from itertools import compress
from typing import Any

from trio_llm.engine.bpe import ByteLevelBPE
from trio_llm.engine.spm import SentencePieceBPE
from trio_llm.engine.vocab import TokenType, WholeTokenMatcher
from trio_llm.engine.wordpiece import WordPiece
from trio_llm.errors import ModelFileError

# Texts of the tokens that end a turn in the chat formats we know; each one counts as a stop
# token when the vocabulary holds it as a control or user-defined token.
END_OF_TURN_TEXTS = (
    "<|im_end|>",  # ChatML (SmolLM2, Qwen)
    "<end_of_turn>",  # Gemma
    "<|eot_id|>",  # Llama 3
    "<|eom_id|>",  # Llama 3 tool calls
    "<|end|>",  # Phi 3
    "<|endoftext|>",  # GPT-2 family end of document
    "<|end_of_text|>",  # Llama 3 end of document
)


class UnsupportedTokenizer(ModelFileError, ValueError):
    """The GGUF names a tokenizer model this engine does not implement, or lacks its vocabulary."""


class Tokenizer:
    """Turns text into token ids and back for one model's vocabulary."""

    def __init__(
        self,
        model: ByteLevelBPE | SentencePieceBPE | WordPiece,
        tokens: list[str],
        token_types: list[int],
        *,
        bos_id: int | None,
        eos_id: int | None,
        add_bos: bool,
        add_eos: bool = False,
        extra_stop_ids: Iterable[int] = (),
    ) -> None:
        self._model = model
        self._tokens = tokens
        self._types = token_types
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos and bos_id is not None
        self.add_eos = add_eos and eos_id is not None
        control, user = int(TokenType.CONTROL), int(TokenType.USER_DEFINED)
        unusual = compress(range(len(tokens)), map(int(TokenType.NORMAL).__ne__, token_types))
        whole = [i for i in unusual if token_types[i] in (control, user)]
        if isinstance(model, SentencePieceBPE):
            # SentencePiece finds user-defined pieces in the normalized text, where every space
            # is already a "▁": pieces spelled with plain spaces (Gemma's runs of spaces) never
            # match there, so they must not match here either.
            whole = [i for i in whole if token_types[i] == control or " " not in tokens[i]]
        self._with_control = WholeTokenMatcher((tokens[i], i) for i in whole)
        self._without_control = WholeTokenMatcher(
            (tokens[i], i) for i in whole if token_types[i] == user
        )
        stops = {i for i in extra_stop_ids if 0 <= i < len(tokens)}
        if eos_id is not None:
            stops.add(eos_id)
        whole_ids = {tokens[i]: i for i in whole}
        stops.update(whole_ids[t] for t in END_OF_TURN_TEXTS if t in whole_ids)
        self._stop_ids = frozenset(stops)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """Build the tokenizer from GGUF metadata (key -> str/int/float/bool or list)."""
        kind = meta.get("tokenizer.ggml.model")
        tokens = list(meta.get("tokenizer.ggml.tokens") or [])
        if not tokens:
            raise UnsupportedTokenizer("the GGUF has no tokenizer.ggml.tokens")
        types = list(map(int, meta.get("tokenizer.ggml.token_type") or []))
        if not types:
            types = [int(TokenType.NORMAL)] * len(tokens)
        if len(types) != len(tokens):
            raise UnsupportedTokenizer("tokenizer.ggml.token_type and tokens differ in length")

        def token_id(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}")
            if value is None or not 0 <= int(value) < len(tokens):
                return None
            return int(value)

        model: ByteLevelBPE | SentencePieceBPE | WordPiece
        bos_id, eos_id = token_id("bos_token_id"), token_id("eos_token_id")
        default_add_eos = False
        if kind == "gpt2":
            merges = list(meta.get("tokenizer.ggml.merges") or [])
            pre = str(meta.get("tokenizer.ggml.pre") or "default")
            model = ByteLevelBPE(tokens, types, merges, pre)
            default_add_bos = False
        elif kind == "llama":
            scores = list(map(float, meta.get("tokenizer.ggml.scores") or []))
            if len(scores) != len(tokens):
                raise UnsupportedTokenizer("a llama vocabulary needs one score per token")
            add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
            model = SentencePieceBPE(
                tokens, types, scores, token_id("unknown_token_id"), add_prefix
            )
            default_add_bos = True
        elif kind == "bert":
            model = WordPiece(tokens, types, token_id("unknown_token_id"))
            # A sequence is [CLS] text [SEP]: the converters write them as BOS and EOS too.
            bos_id = bos_id if bos_id is not None else token_id("cls_token_id")
            eos_id = eos_id if eos_id is not None else token_id("seperator_token_id")
            default_add_bos = default_add_eos = True
        else:
            raise UnsupportedTokenizer(f"unsupported tokenizer.ggml.model {kind!r}")
        extra = [token_id(k) for k in ("eot_token_id", "eom_token_id")]
        return cls(
            model,
            tokens,
            types,
            bos_id=bos_id,
            eos_id=eos_id,
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", default_add_bos)),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", default_add_eos)),
            extra_stop_ids=[i for i in extra if i is not None],
        )

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def eot_ids(self) -> frozenset[int]:
        """Tokens that end generation: eos plus the end-of-turn tokens the vocabulary has."""
        return self._stop_ids

    stop_ids = eot_ids

    def is_control(self, token_id: int) -> bool:
        """Whether `token_id` is a control token (<|im_start|>, <bos>, ...), not text."""
        return self._types[token_id] == TokenType.CONTROL

    def token_to_id(self, text: str) -> int | None:
        """The id of the token whose vocabulary entry is exactly `text`, if any."""
        return self._token_ids.get(text)

    @functools.cached_property
    def _token_ids(self) -> dict[str, int]:
        # Built on first use: a dict over Gemma 3's 262k tokens costs tens of milliseconds.
        return {text: i for i, text in reversed(list(enumerate(self._tokens)))}

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids for `text`. `add_special` adds BOS/EOS where the model asks for them;
        `parse_special` lets control-token texts in `text` become those tokens (otherwise they
        are ordinary text). User-defined tokens are always recognised."""
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)  # type: ignore[arg-type]
        matcher = self._with_control if parse_special else self._without_control
        model = self._model
        at = 0
        for fragment, token_id in matcher.split(text):
            if token_id is not None:
                ids.append(token_id)
            elif isinstance(model, SentencePieceBPE):
                ids.extend(model.encode(fragment, at_start=at == 0))
            else:
                ids.extend(model.encode(fragment))
            at += len(fragment)
        if add_special and self.add_eos:
            ids.append(self.eos_id)  # type: ignore[arg-type]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes `token_id` stands for; a UTF-8 character may span several tokens, so
        a streaming caller joins these bytes and decodes complete characters."""
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} outside the vocabulary of {len(self._tokens)}")
        return self._model.token_bytes(token_id)

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """The text for `ids` (invalid UTF-8 becomes U+FFFD). `skip_special` leaves control
        tokens out. The space that a "▁" prefix stands for at the start is removed."""
        strip_prefix = isinstance(self._model, WordPiece) or (
            isinstance(self._model, SentencePieceBPE) and self._model.add_space_prefix)
        parts: list[bytes] = []
        for token_id in ids:
            data = self.token_bytes(token_id)
            if self._types[token_id] == TokenType.CONTROL:
                if not skip_special:
                    parts.append(data)
                continue
            if strip_prefix and data.startswith(b" "):
                data = data[1:]
            strip_prefix = False
            parts.append(data)
        return b"".join(parts).decode("utf-8", "replace")
