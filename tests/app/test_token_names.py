"""ui.token_names: a token that is part of a UTF-8 character reads as its bytes and id, never as a bare "\ufffd"."""

from __future__ import annotations

import types

import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from app_testkit import REPO_ROOT
from ui.token_names import token_bytes, token_name

TEXT = "héllo → 日本 🙂"


def _holder(tokenizer):
    return types.SimpleNamespace(tokenizer=tokenizer)


@pytest.fixture(scope="module")
def bundled():
    return AutoTokenizer.from_pretrained(REPO_ROOT / "lens_core" / "default_model")


def test_the_bundled_byte_level_vocabulary_gives_every_tokens_bytes(bundled):
    ids = bundled.encode(TEXT, add_special_tokens=False)
    assert b"".join(token_bytes(bundled, i) for i in ids) == TEXT.encode("utf-8")  # the reference: Python's UTF-8
    partial = [i for i in ids if "\ufffd" in bundled.decode([i])]
    assert partial  # the arrow, the CJK characters and the emoji are split into bytes
    for i in partial:
        name = token_name(_holder(bundled), i)
        assert "\ufffd" not in name and name.endswith(f"(id {i})")
        assert name.removesuffix(f" (id {i})") == "".join(f"<0x{b:02X}>" for b in token_bytes(bundled, i))
    whole = next(i for i in ids if bundled.decode([i]) == "h")
    assert token_name(_holder(bundled), whole) == "h"


def test_every_partial_token_of_the_bundled_vocabulary_is_named(bundled):
    for i in range(len(bundled)):
        if "\ufffd" in bundled.decode([i]):
            assert "<0x" in token_name(_holder(bundled), i), i


def test_gpt2_style_tokenizer_of_the_app_tests(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert b"".join(token_bytes(tok, i) for i in ids) == TEXT.encode("utf-8")
    assert token_name(_holder(tok), ids[0], " the") == "␣the"  # plain text: whitespace made visible only


def test_sentencepiece_byte_fallback_pieces():
    vocab = {"<unk>": 0, "<0xE2>": 1, "<0x86>": 2, "<0x92>": 3, "a": 4}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.ByteFallback()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert tok.decode([1]) == "\ufffd"  # the lossy text a page would otherwise show
    assert token_bytes(tok, 1) == b"\xe2"
    assert token_name(_holder(tok), 1) == "<0xE2> (id 1)"
    assert token_name(_holder(tok), 4) == "a"
