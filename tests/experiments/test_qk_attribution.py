"""The qk_attribution experiment on the bundled model's induction preset (must-show of issue 21), and on tiny models.

Independent references: the real model's ``hook_attn_scores`` (the pairs' sum, and the other keys' mean that the
contrast is taken against), and the transcoder's encoder applied by hand to the cached head outputs (which node
drives the key-side features)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lens_core
from lens_core import HookedTransformer
from lens_core.experiments import REGISTRY, REQUEST_TYPES, QKAttributionRequest, qk_attribution
from lens_core.features import load_transcoders
from lens_core.results import ExperimentResult

from exp_tiny import random_tokens, tiny
from graph_support import random_transcoders

PRESETS = Path(lens_core.__file__).resolve().parent / "default_model" / "presets.json"


@pytest.fixture(scope="module")
def induction():
    model = HookedTransformer.from_pretrained("default")
    preset = json.loads(PRESETS.read_text())[0]
    assert preset["name"].startswith("Induction")
    tokens = model.to_tokens(preset["prompt"])
    return model, tokens, qk_attribution(model, QKAttributionRequest(prompt=preset["prompt"], layer=1, head=3))


def test_registered_and_round_trips(induction):
    assert REGISTRY["qk_attribution"] is qk_attribution and REQUEST_TYPES["qk_attribution"] is QKAttributionRequest
    result = induction[2]
    again = ExperimentResult.from_parts(*result.to_parts())
    assert again.summary == result.summary and torch.equal(again.pairs, result.pairs)


def test_exact_on_the_bundled_model(induction):
    model, tokens, _ = induction
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_attn_scores"))
    for layer, head, q, k in [(1, 3, 15, 6), (1, 0, 10, 2), (2, 1, 15, 14), (0, 0, 7, 6), (2, 3, 12, 0)]:
        r = qk_attribution(model, QKAttributionRequest(tokens=tuple(tokens[0].tolist()), layer=layer, head=head,
                                                       query_pos=q, key_pos=k))
        real = cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q]
        assert abs(float(r.pairs.sum()) - float(real[k])) < 1e-4
        assert abs(float(r.group_raw.sum()) - float(real[k])) < 1e-4
        others = torch.cat([real[:k], real[k + 1 : q + 1]])
        if others.numel():
            assert abs(float(r.group_contrast.sum()) - float(real[k] - others.mean())) < 1e-4


def test_induction_head_is_explained_by_current_token_x_previous_token(induction):
    """L1H3 from the last token attends to the token after the earlier copy of that token; the excess of that score
    over the other keys comes mostly from (current-token nodes at the query) x (previous-token nodes at the key)."""
    model, tokens, r = induction
    ids = tokens[0].tolist()
    last = len(ids) - 1
    follower = max(i for i in range(last) if ids[i] == ids[last]) + 1  # derived from the prompt
    assert r.query_pos == last and r.key_pos == follower and r.pattern > 0.5
    contrast = r.group_contrast
    a, b = divmod(int(contrast.flatten().argmax()), contrast.shape[1])
    excess = r.score - r.baseline
    share = float(contrast[a, b]) / excess
    assert r.query_groups[a] in ("layer 0 features", "token embedding")
    assert r.key_groups[b] in ("layer 0 features", "L0H0 output")
    assert share > 0.5, (r.query_groups[a], r.key_groups[b], share)
    # Both previous-token routes together (L0H0 itself, or the layer 0 features at the key) explain nearly all of it.
    both = sum(float(contrast[a, r.key_groups.index(g)]) for g in ("layer 0 features", "L0H0 output"))
    assert both / excess > 0.85
    assert "The query's layer 0 features read mostly the token embedding at that position" in r.summary, r.summary
    assert "the key's layer 0 features read mostly the L0H0 output at that position" in r.summary, r.summary
    assert f"{100 * share:.0f}% comes from the pair ({r.query_groups[a]} at the query) x ({r.key_groups[b]} at the key)" in r.summary

    # The key-side layer 0 features are previous-token features: the largest input of each of the top four (by their
    # part of the dominant pair) is L0H0's output at that position, by the encoder applied by hand.
    tset = load_transcoders(model)
    _, cache = model.run_with_cache(tokens)
    z = cache["blocks.0.attn.hook_z"][0, follower]
    sources = {f"L0H{h}": v for h, v in enumerate(torch.einsum("he,hed->hd", z, model.blocks[0].attn.W_O))}
    sources["embedding"], sources["position"] = cache["hook_embed"][0, follower], cache["hook_pos_embed"][0, follower]
    rows = [i for i, k in enumerate(r.query_kind) if k == "feature"]
    cols = [j for j, k in enumerate(r.key_kind) if k == "feature"]
    weight = r.pairs[rows][:, cols].sum(0)
    for c in weight.topk(4).indices.tolist():
        W = tset[0].W_enc[:, r.key_index[cols[c]]].detach()
        part = {name: float((v - v.mean()) @ W) for name, v in sources.items()}
        assert max(part, key=part.get) == "L0H0", part


def test_tiny_models_and_clear_errors():
    for family in ("gpt2", "llama"):
        model = tiny(family, False)
        tset = random_transcoders(model)
        tokens = random_tokens(8, seed=4)
        r = qk_attribution(model, QKAttributionRequest(tokens=tuple(tokens[0].tolist()), layer=2, head=1), transcoders=tset)
        _, cache = model.run_with_cache(tokens, names_filter="blocks.2.attn.hook_attn_scores")
        real = cache["blocks.2.attn.hook_attn_scores"][0, 1, -1]
        assert r.key_pos == int(real.argmax())
        assert abs(float(r.pairs.sum()) - float(real[r.key_pos])) < 1e-4
        assert "L2H1 attends from position 7" in r.summary
    with pytest.raises(ValueError, match="outside the prompt"):
        qk_attribution(model, QKAttributionRequest(tokens=(1, 2, 3), layer=1, head=0, query_pos=5), transcoders=tset)
    with pytest.raises(ValueError, match="later key"):
        qk_attribution(model, QKAttributionRequest(tokens=(1, 2, 3), layer=1, head=0, query_pos=1, key_pos=2), transcoders=tset)


def test_feature_inputs_sum_to_the_encoder_reading(induction):
    """feature_inputs: a feature's input split over the nodes at its position sums to its encoder applied to the
    cached resid_mid minus the constants (b_O), centred (ln2's frozen scale left out: common to all parts)."""
    from lens_core.experiments.graphs._qk_split import prepare, residual_nodes
    from lens_core.experiments.graphs.qk_attribution import feature_inputs

    model, tokens, r = induction
    tset = load_transcoders(model)
    prep = prepare(model, tset, tokens, 1)
    pos = r.key_pos
    nodes = residual_nodes(model, prep.views, prep.cache, 1, pos)
    f = next(n for n, k in enumerate(nodes.kind) if k == "feature")
    weights = torch.zeros(len(nodes.kind))
    weights[f] = 1.0
    parts = feature_inputs(prep, nodes, pos, weights)
    _, cache = model.run_with_cache(tokens)
    x = cache["blocks.0.hook_resid_mid"][0, pos] - model.blocks[0].attn.b_O
    x = x - x.mean()
    expected = float(x @ tset[0].W_enc[:, nodes.index[f]].detach())
    assert sum(parts.values()) == pytest.approx(expected, abs=1e-4)
    assert set(parts) == {"token embedding", "positional embedding"} | {f"L0H{h} output" for h in range(4)}
