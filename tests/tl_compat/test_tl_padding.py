"""Padded batches against transformer-lens 4.3.0 and against each prompt run alone: to_tokens(padding_side=),
utils.get_attention_mask, forward(attention_mask=, padding_side=), position ids that skip left padding
(learned positions and rotary), run_with_cache on a padded batch, the masked loss."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import utilities as tl_utils

from lens_core import utils
from tl_pairs import assert_same

PROMPTS = ["The cat sat on the mat and then the dog came", "Hello there", "def add(a, b):"]


def _left_pad(rows, pad):
    width = max(len(r) for r in rows)
    tokens = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return tokens, mask


def _rows():
    gen = torch.Generator().manual_seed(5)
    return [[0] + torch.randint(1, 20, (n,), generator=gen).tolist() for n in (8, 3, 5)]


@torch.no_grad()
def test_left_padded_batch_gives_each_prompt_its_own_logits(models):
    """Learned positions (gpt2, neox's rotary, llama, qwen2) with an explicit mask: the real positions of
    each row equal the prompt run alone, and the bridge on the same batch and mask."""
    ours, bridge, _ = models
    rows = _rows()
    tokens, mask = _left_pad(rows, pad=0)
    logits = ours(tokens, attention_mask=mask)
    theirs = bridge(tokens, attention_mask=mask)
    for i, row in enumerate(rows):
        alone = ours(torch.tensor([row]))[0]
        assert_same(logits[i, -len(row):], alone, rel=1e-5)
        assert_same(logits[i, -len(row):], theirs[i, -len(row):], rel=1e-4)
    # without the mask the short rows are different (the pads are read, positions shifted)
    assert (ours(tokens)[1, -len(rows[1]):] - ours(torch.tensor([rows[1]]))[0]).abs().max() > 1e-3


@torch.no_grad()
def test_run_with_cache_on_a_padded_batch(models):
    ours, bridge, _ = models
    rows = _rows()
    tokens, mask = _left_pad(rows, pad=0)
    _, cache = ours.run_with_cache(tokens, attention_mask=mask)
    _, tl_cache = bridge.run_with_cache(tokens, attention_mask=mask)
    n = len(rows[1])
    for name in ("resid_post", "z"):
        for layer in range(ours.cfg.n_layers):
            assert_same(cache[name, layer][:, -n:][1], tl_cache[name, layer][:, -n:][1], rel=1e-4)
    # the pattern of a real query puts no weight on padding keys
    pattern = cache["pattern", 0][1]  # [head, q, k]
    assert pattern[:, -n:, : tokens.shape[1] - n].abs().max() == 0
    _, alone = ours.run_with_cache(torch.tensor([rows[1]]))
    assert_same(pattern[:, -n:, -n:], alone["pattern", 0][0], rel=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
@torch.no_grad()
def test_text_batches_padding_side(bundled, side):
    ours, bridge, _ = bundled
    tokens = ours.to_tokens(PROMPTS, padding_side=side)
    assert torch.equal(tokens, bridge.to_tokens(PROMPTS, padding_side=side))
    mine, theirs = ours(PROMPTS, padding_side=side), bridge(PROMPTS, padding_side=side)
    lengths = [len(ours.to_tokens(p)[0]) for p in PROMPTS]
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths)):
        real = slice(-n, None) if side == "left" else slice(0, n)
        assert_same(mine[i, real], ours(prompt)[0], rel=1e-5)
        assert_same(mine[i, real], theirs[i, real], rel=1e-4)
    # the masked loss counts only real tokens, as TransformerLens's does
    assert_same(ours(PROMPTS, padding_side="left", return_type="loss"), bridge(PROMPTS, padding_side="left", return_type="loss"), rel=1e-4)


def test_get_attention_mask_left_with_bos_as_pad(bundled):
    """GPT-2 pads with its BOS id: with left padding the first real BOS stays visible."""
    ours, bridge, _ = bundled
    tokens = ours.to_tokens(PROMPTS, padding_side="left")
    for prepend_bos in (True, False):
        side = bridge.tokenizer.padding_side
        bridge.tokenizer.padding_side = "left"
        try:
            theirs = tl_utils.get_attention_mask(bridge.tokenizer, tokens, prepend_bos)
        finally:
            bridge.tokenizer.padding_side = side
        assert torch.equal(utils.get_attention_mask(ours.tokenizer, tokens, prepend_bos, "left"), theirs)
    with pytest.raises(ValueError):
        ours.to_tokens(PROMPTS, padding_side="middle")
