"""QK attribution: an attention score split exactly into (query-side node) x (key-side node) pairs.

References: the real model's own ``hook_attn_scores`` (the sum of every pair and bias term), and for a
two-node case a hand computation from the Hugging Face model's weights (embedding + position at layer 0)."""

from __future__ import annotations

import pytest
import torch
from hf_tiny_families import gemma2, gemma3, qwen3

from lens_core import HookedTransformer
from lens_core.experiments.graphs._qk_split import prepare, split_prepared, split_score

from exp_tiny import HF, random_tokens, tiny, tiny_graph_case
from graph_support import random_transcoders

CASES = [("gpt2", True), ("gpt2", False), ("llama", True), ("llama", False)]  # llama: rotary, grouped keys


def _real_scores(model, tokens, layer):
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_attn_scores")
    return cache[f"blocks.{layer}.attn.hook_attn_scores"][0]


@pytest.mark.parametrize("family,fold", CASES)
def test_pairs_sum_to_the_real_score(family, fold):
    model, tset, tokens = tiny_graph_case(family, fold, 9, 5)
    for layer in range(model.cfg.n_layers):
        prep = prepare(model, tset, tokens, layer)
        real = _real_scores(model, tokens, layer)
        for head, q, k in [(0, 8, 0), (1, 8, 5), (3, 6, 6), (2, 4, 1)]:
            split = split_prepared(prep, head, q, k)
            n_q, n_k = len(split.query.kind), len(split.key.kind)
            assert split.pairs.shape == (n_q + 1, n_k + 1)
            assert abs(float(split.pairs.sum()) - float(real[head, q, k])) < 1e-4
            assert split.score == pytest.approx(float(real[head, q, k]), abs=1e-4)
        # the nodes at a position sum to the residual stream the layer reads
        _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_pre")
        torch.testing.assert_close(split.key.vectors.sum(0), cache[f"blocks.{layer}.hook_resid_pre"][0, 1], atol=1e-4, rtol=0)
        if layer:
            kinds = set(split.key.kind)
            assert {"embedding", "feature", "error", "head", "bias"} <= kinds, kinds


def test_post_attention_norm_and_sliding_window():
    """Gemma 2 without its score soft-cap: ln1_post frozen per position, a 4-key window on layer 0."""
    model = HookedTransformer.from_hf_model(gemma2(0, attn_logit_softcapping=None), tokenizer=None)
    tset = random_transcoders(model)
    tokens = random_tokens(10, seed=2)
    real = _real_scores(model, tokens, 1)
    for head, q, k in [(0, 9, 0), (3, 9, 8), (2, 5, 2)]:
        split = split_score(model, tset, tokens, 1, head, q, k)
        assert abs(float(split.pairs.sum()) - float(real[head, q, k])) < 1e-4
    with pytest.raises(ValueError, match="window"):
        split_score(model, tset, tokens, 0, 0, 9, 1)


def test_hand_computed_two_node_case():
    """Layer 0 of GPT-2: the residual is token embedding + positional embedding, two nodes a side. Each of the
    four pairs computed by hand from the Hugging Face weights (c_attn, ln_1), with LayerNorm's scale frozen."""
    hf = HF["gpt2"](0)
    model = tiny("gpt2", False)
    tset = random_transcoders(model)
    tokens = random_tokens(6, seed=1)
    head, q, k = 2, 5, 3
    split = split_score(model, tset, tokens, 0, head, q, k)
    assert split.query.kind == ["embedding", "pos_embed"] and split.key.kind == ["embedding", "pos_embed"]
    d, e = hf.config.n_embd, hf.config.n_embd // hf.config.n_head
    wte, wpe = hf.transformer.wte.weight.detach(), hf.transformer.wpe.weight.detach()
    ln = hf.transformer.h[0].ln_1
    W, b = hf.transformer.h[0].attn.c_attn.weight.detach(), hf.transformer.h[0].attn.c_attn.bias.detach()
    Wq, Wk = W[:, head * e : (head + 1) * e], W[:, d + head * e : d + (head + 1) * e]
    bq, bk = b[head * e : (head + 1) * e], b[d + head * e : d + (head + 1) * e]

    def side(pos, Wx, bx):
        parts = [wte[tokens[0, pos]], wpe[pos]]
        x = parts[0] + parts[1]
        scale = ((x - x.mean()) ** 2).mean().add(ln.eps).sqrt()
        vecs = [((p - p.mean()) / scale * ln.weight.detach()) @ Wx for p in parts]
        return vecs + [ln.bias.detach() @ Wx + bx]

    Q, K = side(q, Wq, bq), side(k, Wk, bk)
    hand = torch.tensor([[float(a @ c) / e**0.5 for c in K] for a in Q])
    torch.testing.assert_close(split.pairs, hand, atol=1e-5, rtol=0)


@pytest.mark.parametrize("build,what", [(qwen3, "q/k norm"), (gemma3, "q/k norm"), (gemma2, "soft-caps")])
def test_refuses_what_it_cannot_split_exactly(build, what):
    model = HookedTransformer.from_hf_model(build(0), tokenizer=None)
    tset = random_transcoders(model)
    with pytest.raises(ValueError, match=what):
        split_score(model, tset, random_tokens(6, seed=0), 1, 0, 5, 2)


def test_bad_positions_are_clear():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(6, seed=0)
    with pytest.raises(ValueError, match="later key"):
        split_score(model, tset, tokens, 1, 0, 2, 4)
    with pytest.raises(ValueError, match="head 9"):
        split_score(model, tset, tokens, 1, 9, 2, 1)
    with pytest.raises(ValueError, match="layer 7"):
        split_score(model, tset, tokens, 7, 0, 2, 1)


@pytest.mark.parametrize("kind", ["clt", "skip"])
def test_pairs_sum_to_the_real_score_with_skip_and_cross_layer_transcoders(kind):
    from graph_support import random_clt, random_skip_transcoders

    model = tiny("llama", False)
    dictionary = random_clt(model, skip=True) if kind == "clt" else random_skip_transcoders(model)
    tokens = random_tokens(9, seed=5)
    layer = model.cfg.n_layers - 1
    prep = prepare(model, dictionary, tokens, layer)
    real = _real_scores(model, tokens, layer)
    for head, q, k in [(0, 8, 0), (1, 8, 5)]:
        split = split_prepared(prep, head, q, k)
        assert split.score == pytest.approx(float(real[head, q, k]), abs=1e-4)
        assert abs(float(split.pairs.sum()) - float(real[head, q, k])) < 1e-4
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_pre")
    torch.testing.assert_close(split.key.vectors.sum(0), cache[f"blocks.{layer}.hook_resid_pre"][0, 5], atol=1e-4, rtol=0)
    features = [i for i, kd in enumerate(split.key.kind) if kd == "feature"]
    assert features and {"error", "head", "bias"} <= set(split.key.kind)
    if kind == "clt":  # a layer-0 CLT feature's vector is its writes into every layer below, summed
        i = next(i for i in features if split.key.layer[i] == 0)
        f = split.key.index[i]
        x = model.run_with_cache(tokens, names_filter=dictionary.hook_in(0))[1][dictionary.hook_in(0)][0, 5]
        a = dictionary.encode_layer(x, 0)[f]
        expected = a * dictionary.W_dec[0][f, :layer].sum(0)
        torch.testing.assert_close(split.key.vectors[i], expected.detach(), atol=1e-5, rtol=1e-5)
