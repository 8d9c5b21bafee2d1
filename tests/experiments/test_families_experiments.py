"""Every experiment on Gemma 2, Gemma 3, Qwen3 and OLMo 2 tiny models, checked against transformers, autograd
or a run by hand: predictions, attention, logit lens, DLA, activation patching, ablation, head detectors, EAP and
the attribution graph with random transcoders."""

import dataclasses
import functools

import pytest
import torch

import hf_tiny_families
from exp_tiny import random_tokens
from graph_reference import reference_rows
from graph_support import random_transcoders
import edge_reference
from lens_core import HookedTransformer
from lens_core.experiments import (AblationRequest, AttentionRequest, DetectorRequest, DLARequest, EdgeAttributionRequest,
                                   LogitLensRequest, PatchingRequest, PredictionsRequest, ablation, attention_patterns,
                                   direct_logit_attribution, edge_attribution, head_detectors, logit_lens,
                                   activation_patching, predictions)
from lens_core.experiments.graphs._replacement import build_graph

FAMILIES = sorted(hf_tiny_families.FAMILIES)
CASES = [(f, fold) for f in FAMILIES for fold in (True, False)]
CLEAN, CORRUPTED = (3, 8, 1, 20, 7, 11), (3, 9, 1, 21, 7, 12)
ANSWER, WRONG = 4, 5


@functools.lru_cache(maxsize=None)
def hf(family):
    return hf_tiny_families.FAMILIES[family]()


@functools.lru_cache(maxsize=None)
def model(family, fold=True):
    opts = dict(fold_ln=fold, center_writing_weights=fold, center_unembed=fold, fold_value_biases=fold)
    return HookedTransformer.from_hf_model(hf(family), **opts)


def hf_run(family, tokens):
    with torch.no_grad():
        return hf(family)(tokens, output_hidden_states=True, output_attentions=True)


@pytest.mark.parametrize("family,fold", CASES)
def test_predictions_attention_and_logit_lens_match_transformers(family, fold):
    m, tokens = model(family, fold), random_tokens(9, seed=2)
    ref = hf_run(family, tokens)
    probs = ref.logits[0].softmax(-1)
    pred = predictions(m, PredictionsRequest(tokens=tuple(tokens[0].tolist()), top_k=3))
    torch.testing.assert_close(pred.top_probs, probs.topk(3).values, atol=1e-5, rtol=0)
    att = attention_patterns(m, AttentionRequest(tokens=tuple(tokens[0].tolist())))
    torch.testing.assert_close(att.patterns, torch.cat(ref.attentions), atol=1e-5, rtol=0)  # sliding window, soft-cap
    lens = logit_lens(m, LogitLensRequest(tokens=tuple(tokens[0].tolist()), targets=(7,), top_k=2))
    torch.testing.assert_close(lens.target_probs[-1, :, 0], probs[:, 7], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,fold", CASES)
def test_dla_sums_to_the_logit_difference(family, fold):
    m, tokens = model(family, fold), random_tokens(7, seed=5)
    res = direct_logit_attribution(m, DLARequest(tokens=tuple(tokens[0].tolist()), answer=11, wrong_answer=23,
                                                 position=-2, neuron_layer=1))
    ref = hf_run(family, tokens)
    capped = ref.logits[0, -2]
    uncapped = ref.hidden_states[-1][0, -2] @ hf(family).lm_head.weight.detach().T  # before Gemma 2's soft-cap
    assert res.logit_diff == pytest.approx(float(capped[11] - capped[23]), abs=1e-4)
    assert res.soft_capped == (family == "gemma2")
    assert float(res.decomposed.sum()) + res.bias_total == pytest.approx(float(uncapped[11] - uncapped[23]), abs=1e-4)
    # Heads (through the frozen post-norm) sum to their layer's attention part (these models have no b_O).
    attn = res.decomposed[[res.component_labels.index(f"L{l} attn") for l in range(m.cfg.n_layers)]]
    torch.testing.assert_close(res.heads.sum(-1), attn, atol=1e-4, rtol=1e-4)
    mlp1 = res.decomposed[res.component_labels.index("L1 mlp")]
    assert float(res.neurons.sum()) == pytest.approx(float(mlp1), abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_and_ablation(family):
    m = model(family)
    req = PatchingRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=ANSWER, wrong_answer=WRONG, sweep="resid_post")
    res = activation_patching(m, req)
    clean, corr = m(torch.tensor([CLEAN]))[0, -1], m(torch.tensor([CORRUPTED]))[0, -1]
    assert res.clean_logit_diff == pytest.approx(float(clean[ANSWER] - clean[WRONG]), abs=1e-5)
    assert res.corrupted_logit_diff == pytest.approx(float(corr[ANSWER] - corr[WRONG]), abs=1e-5)
    n = m.cfg.n_layers
    assert float(res.normalized[n - 1, -1]) == pytest.approx(1.0, abs=1e-4)  # the whole clean final residual
    assert float(res.normalized[n - 1, 0]) == pytest.approx(0.0, abs=1e-4)
    heads = activation_patching(m, PatchingRequest(**{**req.__dict__, "sweep": "head_out_all_pos"}))
    assert torch.isfinite(heads.normalized).all() and heads.normalized.shape == (n, m.cfg.n_heads)
    # Zero-ablating a head equals the run with its hook_z zeroed by hand.
    abl = ablation(m, AblationRequest(tokens=CLEAN, components=(("head", 1, 2),), answer=ANSWER, wrong_answer=WRONG))

    def zero(z, hook):
        z = z.clone()
        z[:, :, 2] = 0
        return z
    logits = m.run_with_hooks(torch.tensor([CLEAN]), fwd_hooks=[("blocks.1.attn.hook_z", zero)])[0, -1]
    assert abl.ablated_metric == pytest.approx(float(logits[ANSWER] - logits[WRONG]), abs=1e-5)
    det = head_detectors(m, DetectorRequest(seq_len=6, batch=2))
    assert det.induction.shape == (n, m.cfg.n_heads) and torch.isfinite(det.previous_token).all()


def _sender(m, cache, name):
    if name == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if name.startswith("MLP"):
        return cache[f"blocks.{name[3:]}.hook_mlp_out"]
    layer, head = int(name[1]), int(name[3])
    out = torch.einsum("bpe,ed->bpd", cache[f"blocks.{layer}.attn.hook_z"][:, :, head], m.blocks[layer].attn.W_O[head])
    post = m.blocks[layer].ln1_post
    return out if post is None else out / cache[f"blocks.{layer}.ln1_post.hook_scale"] * post.w


def _receiver_grad(m, resid0, name):
    return edge_reference.receiver_gradient(m, resid0, name, ANSWER, WRONG)


@pytest.mark.parametrize("family", FAMILIES)
def test_eap_scores_match_autograd(family):
    m = model(family, False)
    res = edge_attribution(m, EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=ANSWER,
                                                     wrong_answer=WRONG, method="eap"))
    _, clean = m.run_with_cache(torch.tensor([CLEAN]))
    _, corrupt = m.run_with_cache(torch.tensor([CORRUPTED]))
    for s, r in [("L0H1", "L1KV0.k"), ("embed", "L1H3.q"), ("MLP0", "logits"), ("L1H2", "logits"), ("L0H3", "MLP1.in")]:
        delta = _sender(m, corrupt, s) - _sender(m, clean, s)
        expected = float((delta * _receiver_grad(m, clean["blocks.0.hook_resid_pre"], r)).sum())
        got = float(res.scores[res.senders.index(s), res.receivers.index(r)])
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (s, r)
    assert torch.isfinite(res.scores).all() and res.scores.abs().max() > 1e-4


def _transcoders(m):
    tset = random_transcoders(m, activation="topk")
    if m.blocks[0].ln2 is None:  # OLMo 2: no norm before the MLP, the transcoders read the residual
        for layer in range(m.cfg.n_layers):
            tset[layer].cfg = dataclasses.replace(tset[layer].cfg, hook_in=f"blocks.{layer}.hook_resid_mid")
    return tset


@pytest.mark.parametrize("family,fold", CASES)
def test_attribution_graph_is_complete_and_matches_autograd(family, fold):
    m, tokens = model(family, fold), random_tokens(8, seed=3)
    tset = _transcoders(m)
    graph = build_graph(m, tset, tokens, max_logits=3, logit_mass=0.99)
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_node(0), graph.n_nodes)])
    total = graph.adjacency[rows].sum(1) + graph.node_bias[rows]
    torch.testing.assert_close(total, graph.node_input[rows], atol=1e-4, rtol=0)
    # Logit nodes: transformers' demeaned logits at the last position, before Gemma 2's soft-cap.
    ref = hf_run(family, tokens)
    uncapped = ref.hidden_states[-1][0, -1] @ hf(family).lm_head.weight.detach().T
    torch.testing.assert_close(graph.node_input[graph.logit_node(0):], (uncapped - uncapped.mean())[graph.logit_tokens],
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(graph.logit_probs, ref.logits[0, -1].softmax(-1)[graph.logit_tokens], atol=1e-5, rtol=0)
    targets = (graph.feature_layer == m.cfg.n_layers - 1).nonzero()[:, 0][[0, -1]].tolist()
    expected = reference_rows(m, tset, tokens, graph, targets)
    keep = torch.zeros(graph.n_nodes, dtype=torch.bool)
    keep[: graph.n_features] = True
    keep[graph.embedding_node(0): graph.embedding_node(0) + graph.n_pos] = True
    torch.testing.assert_close(graph.adjacency[targets][:, keep], expected[:, keep], atol=1e-4, rtol=1e-4)
    assert expected[:, keep].abs().max() > 1e-2
    torch.testing.assert_close(graph.adjacency[targets], expected, atol=1e-4, rtol=1e-4)  # error nodes too


@pytest.mark.parametrize("family", ["gemma2", "olmo2"])
def test_attribution_graph_experiment_and_intervention(family):
    from lens_core.experiments import (AttributionGraphRequest, GraphInterventionRequest, attribution_graph,
                                       graph_intervention)
    m, tokens = model(family), random_tokens(7, seed=8)
    tset = _transcoders(m)
    res = attribution_graph(m, AttributionGraphRequest(tokens=tuple(tokens[0].tolist()), max_logits=2, check_top=4),
                            transcoders=tset)
    assert res.completeness_error < 1e-4 and len(res.check_nodes) == 4
    assert torch.isfinite(res.check_actual_frozen).all() and torch.isfinite(res.check_predicted).all()
    layer, pos, feat = 0, 6, 0  # feature 0 is always on (graph_support)
    out = graph_intervention(m, GraphInterventionRequest(tokens=tuple(tokens[0].tolist()), clamps=((layer, pos, feat, 0.0),),
                                                         max_logits=2), transcoders=tset)
    assert torch.isfinite(out.actual_change).all() and torch.isfinite(out.predicted_change).all()
    assert out.before_probs.sum() <= 1.0 + 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_path_and_attribution_patching(family):
    from lens_core.experiments import (AttributionPatchingRequest, PathPatchingRequest, attribution_patching,
                                       path_patching)
    m = model(family)
    res = path_patching(m, PathPatchingRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=ANSWER,
                                               wrong_answer=WRONG, senders=((0, 1),)))
    _, clean = m.run_with_cache(torch.tensor([CLEAN]), names_filter=lambda name: name.endswith("hook_z"))
    _, corrupt = m.run_with_cache(torch.tensor([CORRUPTED]), names_filter=lambda name: name.endswith("hook_z"))

    def sender(z, hook):
        z = z.clone()
        z[:, :, 1] = clean[hook.name][:, :, 1]
        return z
    hooks = [("blocks.0.attn.hook_z", sender), ("blocks.1.attn.hook_z", lambda z, hook: corrupt[hook.name])]
    logits = m.run_with_hooks(torch.tensor([CORRUPTED]), fwd_hooks=hooks)[0, -1]  # only the direct paths of L0H1
    assert float(res.logit_diff.reshape(-1)[0]) == pytest.approx(float(logits[ANSWER] - logits[WRONG]), abs=1e-4)
    approx = attribution_patching(m, AttributionPatchingRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED,
                                                                answer=ANSWER, wrong_answer=WRONG, sweep="resid_pre"))
    assert torch.isfinite(approx.logit_diff).all() and approx.logit_diff.shape[0] == m.cfg.n_layers
