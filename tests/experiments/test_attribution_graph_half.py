"""Attribution graphs of float16 / bfloat16 models: computed in float32 from the half-precision forward pass.

References: the float32 walk on a float32 copy of the same (half-rounded) weights, fed that same half forward's
cached activations (the graph must equal it: the only difference allowed is float32 rounding), and the float32
model's own graph (close, to the half forward's rounding)."""

from __future__ import annotations

import copy

import pytest
import torch
from exp_tiny import random_tokens
from graph_reference import completeness_residual
from graph_support import random_clt, random_transcoders
from hf_tiny import gpt2

from lens_core import HookedTransformer
from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs import _clt_walk, _replacement
from lens_core.experiments.graphs._frozen import forward as real_forward
from lens_core.experiments.graphs._replacement import build_graph

TOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2}  # relative to the largest edge: the half forward's rounding


def _models(dtype):
    half = HookedTransformer.from_hf_model(gpt2(0), tokenizer=None, dtype=str(dtype).replace("torch.", ""))
    full = copy.deepcopy(half).to(torch.float32)
    full.cfg.dtype = torch.float32
    return half, full


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["transcoders", "clt"])
def test_half_graph_is_the_float32_walk_on_the_half_forward(dtype, kind, monkeypatch):
    half, full = _models(dtype)
    assert half.W_E.dtype == dtype
    d32 = random_transcoders(full) if kind == "transcoders" else random_clt(full, skip=True)
    d16 = copy.deepcopy(d32).to(dtype)
    tokens = random_tokens(7, seed=41)
    graph = build_graph(half, d16, tokens, max_logits=2)
    assert graph.adjacency.dtype == torch.float32
    # The float32 model's own graph (the same weights; dictionary in float32 too): close.
    own = build_graph(full, copy.deepcopy(d16).to(torch.float32), tokens, max_logits=2)
    scale = float(own.adjacency.abs().max())
    logits = own.node_input[own.logit_node(0):]
    assert float((graph.node_input[graph.logit_node(0):] - logits).abs().max()) < TOL[dtype] * float(logits.abs().max())
    same_features = torch.equal(own.feature_index, graph.feature_index) and torch.equal(own.feature_pos, graph.feature_pos)
    assert same_features or dtype == torch.bfloat16  # bfloat16 rounding may switch a near-tie feature
    if same_features:
        assert float((graph.adjacency - own.adjacency).abs().max()) < TOL[dtype] * scale
    # The float32 walk fed the half forward's cache: equal.
    walk_module = _replacement if kind == "transcoders" else _clt_walk
    monkeypatch.setattr(walk_module, "forward", lambda model, *args: real_forward(half, *args))
    same = build_graph(full, copy.deepcopy(d16).to(torch.float32), tokens, max_logits=2)
    torch.testing.assert_close(graph.adjacency, same.adjacency, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(graph.node_bias, same.node_bias, atol=1e-5, rtol=1e-5)
    assert completeness_residual(same).abs().max() < TOL[dtype] * 10


def test_half_experiment_says_it_ran_in_float32():
    half, _ = _models(torch.float16)
    tset = random_transcoders(half).to(torch.float16)
    tokens = random_tokens(7, seed=42)
    result = attribution_graph(half, AttributionGraphRequest(tokens=tuple(tokens[0].tolist()), check_top=3), transcoders=tset)
    assert "computed in float32 from the model's float16 forward pass" in result.notice
    assert result.adjacency.dtype == torch.float32 and result.check_correlation_full is not None
