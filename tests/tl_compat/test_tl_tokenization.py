"""prepend_bos / default_prepend_bos in every tokenization method, and utils.tokenize_and_concatenate,
against transformer-lens 4.3.0 with the same tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import utilities as tl_utils

from lens_core import utils

TEXT = "The cat sat on the mat and the cat ran"
DOCS = ["The cat sat on the mat.", "Dogs bark at night, and cats do not.", "def add(a, b): return a + b", "Hi"]


@pytest.mark.parametrize("default", [True, False])
def test_prepend_bos_in_every_method(bundled, default):
    ours, bridge, _ = bundled
    saved = ours.cfg.default_prepend_bos, bridge.cfg.default_prepend_bos
    ours.cfg.default_prepend_bos = bridge.cfg.default_prepend_bos = default
    try:
        for prepend_bos in (None, True, False):
            assert torch.equal(ours.to_tokens(TEXT, prepend_bos=prepend_bos), bridge.to_tokens(TEXT, prepend_bos=prepend_bos))
            assert ours.to_str_tokens(TEXT, prepend_bos=prepend_bos) == bridge.to_str_tokens(TEXT, prepend_bos=prepend_bos)
            assert ours.to_str_tokens([TEXT, "Hi"], prepend_bos=prepend_bos) == bridge.to_str_tokens([TEXT, "Hi"], prepend_bos=prepend_bos)
            for mode in ("first", "last"):
                assert (ours.get_token_position(" the", TEXT, mode=mode, prepend_bos=prepend_bos)
                        == bridge.get_token_position(" the", TEXT, mode=mode, prepend_bos=prepend_bos))
            with torch.no_grad():
                assert torch.allclose(ours(TEXT, prepend_bos=prepend_bos), bridge(TEXT, prepend_bos=prepend_bos), atol=1e-4)
        tokens = ours.to_tokens(TEXT)
        assert ours.to_string(tokens) == bridge.to_string(tokens)
        assert ours.to_string(tokens[0]) == bridge.to_string(tokens[0])
        assert ours.to_single_token(" the") == bridge.to_single_token(" the")
    finally:
        ours.cfg.default_prepend_bos, bridge.cfg.default_prepend_bos = saved


def test_test_prompt_prepend_bos(bundled, capsys):
    ours, bridge, _ = bundled
    for prepend_bos in (True, False):
        utils.test_prompt("The cat sat on the", " mat", ours, prepend_bos=prepend_bos, top_k=3)
        mine = capsys.readouterr().out
        tl_utils.test_prompt("The cat sat on the", " mat", bridge, prepend_bos=prepend_bos, top_k=3)
        assert mine == capsys.readouterr().out.replace("\033[1m", "").replace("\033[0m", "")


@pytest.mark.parametrize("add_bos_token", [True, False])
@pytest.mark.parametrize("max_length", [6, 16, 200])
def test_tokenize_and_concatenate(bundled, add_bos_token, max_length):
    datasets = pytest.importorskip("datasets")
    ours, _, _ = bundled
    tokenizer = ours.tokenizer
    data = datasets.Dataset.from_dict({"text": DOCS, "meta": list(range(len(DOCS)))})
    theirs = tl_utils.tokenize_and_concatenate(data.remove_columns("meta"), copy.deepcopy(tokenizer), max_length=max_length,
                                               add_bos_token=add_bos_token, num_proc=None)[:]["tokens"]
    mine = utils.tokenize_and_concatenate(data, tokenizer, max_length=max_length, add_bos_token=add_bos_token)[:]["tokens"]
    assert torch.equal(mine, theirs)
    as_list = utils.tokenize_and_concatenate(DOCS, tokenizer, max_length=max_length, add_bos_token=add_bos_token)["tokens"]
    assert torch.equal(as_list, theirs) and as_list.shape[1] == max_length
