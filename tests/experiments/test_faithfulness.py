"""Exact edge-level patching: the baselines, single edges against hand-built hooks, batching,
and the induction circuit of the bundled model found by EAP-IG."""

import functools
import json
from pathlib import Path

import pytest
import torch
from exp_tiny import tiny

from lens_core import HookedTransformer
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors
from lens_core.experiments.edge_circuits.circuit_graph import select_circuit
from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, build_graph, edge_attribution, task_from_request
from lens_core.experiments.edge_circuits.faithfulness import FaithfulnessRequest, circuit_faithfulness, curve_sizes, patched_metric

CLEAN, CORRUPTED = (3, 8, 1, 20, 7, 11), (3, 9, 1, 21, 7, 12)
PAIR = dict(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=4, wrong_answer=5)


def metric_of(logits):
    return float(logits[0, -1, 4] - logits[0, -1, 5])


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_all_edges_give_clean_and_none_give_corrupted(family):
    model = tiny(family)
    graph = build_graph(model.cfg)
    task = task_from_request(model, EdgeAttributionRequest(**PAIR))
    values = patched_metric(model, graph, task, torch.stack([graph.allowed, torch.zeros_like(graph.allowed)]))
    assert float(values[0]) == pytest.approx(metric_of(model(torch.tensor([CLEAN]))), abs=1e-5)
    assert float(values[1]) == pytest.approx(metric_of(model(torch.tensor([CORRUPTED]))), abs=1e-5)


def test_removing_edges_matches_hand_built_hooks():
    """Edges embed -> L0H1.v and L0H1 -> L2H0.k out: L0H1 sees a corrupted value input, and its
    output *in this run* (not the clean one) is what L2H0's key input loses."""
    model = tiny("gpt2")
    graph = build_graph(model.cfg)
    task = task_from_request(model, EdgeAttributionRequest(**PAIR))
    names = lambda n: n in ("blocks.0.hook_resid_pre", "blocks.0.attn.hook_result")  # noqa: E731
    _, clean = model.run_with_cache(torch.tensor([CLEAN]), names_filter=names)
    _, corrupt = model.run_with_cache(torch.tensor([CORRUPTED]), names_filter=names)
    embed_delta = clean["blocks.0.hook_resid_pre"] - corrupt["blocks.0.hook_resid_pre"]
    corrupt_head = corrupt["blocks.0.attn.hook_result"][:, :, 1]
    now = {}

    def v_in(x, hook):
        x = x.clone()
        x[:, :, 1] -= embed_delta
        return x

    def z0(z, hook):
        now["L0H1"] = z[:, :, 1] @ model.blocks[0].attn.W_O[1]

    def k_in(x, hook):
        x = x.clone()
        x[:, :, 0] -= now["L0H1"] - corrupt_head
        return x

    single = model.run_with_hooks(torch.tensor([CLEAN]), fwd_hooks=[("blocks.2.hook_k_input", lambda x, h: k_in(x, h)),
                                                                     ("blocks.0.attn.hook_z", z0)])
    now.clear()
    both = model.run_with_hooks(torch.tensor([CLEAN]), fwd_hooks=[("blocks.0.hook_v_input", v_in), ("blocks.0.attn.hook_z", z0),
                                                                   ("blocks.2.hook_k_input", k_in)])
    masks = graph.allowed.clone().repeat(2, 1, 1)
    masks[:, graph.head_sender(0, 1), graph.receiver(2, "k", 0)] = False
    masks[1, 0, graph.receiver(0, "v", 1)] = False
    values = patched_metric(model, graph, task, masks)
    assert float(values[0]) == pytest.approx(metric_of(single), abs=1e-5)
    assert float(values[1]) == pytest.approx(metric_of(both), abs=1e-5)
    assert abs(metric_of(single) - metric_of(both)) > 1e-4  # the upstream removal matters


def test_a_batched_curve_equals_one_circuit_at_a_time():
    model = tiny("gpt2")
    graph = build_graph(model.cfg)
    task = task_from_request(model, EdgeAttributionRequest(**PAIR))
    masks = torch.rand((5, *graph.allowed.shape), generator=torch.Generator().manual_seed(0)) < 0.5
    batched = patched_metric(model, graph, task, masks, memory_budget_mb=0.01)  # forces chunks of one circuit
    together = patched_metric(model, graph, task, masks)
    alone = torch.cat([patched_metric(model, graph, task, m[None]) for m in masks])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert curve_sizes(262, 10)[0] == 1 and curve_sizes(262, 10)[-1] == 262 and len(curve_sizes(262, 10)) == 10


def test_faithfulness_request_errors():
    model = tiny("gpt2")
    with pytest.raises(ValueError, match="between 1 and"):
        circuit_faithfulness(model, FaithfulnessRequest(**PAIR, n_edges=10**6))
    with pytest.raises(ValueError, match="circuit size"):
        circuit_faithfulness(model, FaithfulnessRequest(**PAIR))


# ---- the bundled model's induction circuit ---------------------------------------------
@functools.lru_cache(maxsize=None)
def bundled():
    return HookedTransformer.from_pretrained("default")


def top_heads(model):
    detectors = head_detectors(model, DetectorRequest())
    prev = divmod(int(detectors.previous_token.argmax()), model.cfg.n_heads)
    induction = divmod(int(detectors.induction.argmax()), model.cfg.n_heads)
    return prev, induction


def preset_request():
    """The induction preset; corrupted: the earlier copy of the last token replaced by another word of the
    prompt (the token after the answer's earlier copy), so there is nothing to follow."""
    presets = json.loads((Path(__file__).parents[2] / "lens_core/default_model/presets.json").read_text())
    preset = next(p for p in presets if p["name"].startswith("Induction"))
    model = bundled()
    ids = model.to_tokens(preset["prompt"])[0].tolist()
    first = ids.index(ids[-1])
    corrupted = list(ids)
    corrupted[first] = ids[first + 2]
    return dict(clean_tokens=tuple(ids), corrupted_tokens=tuple(corrupted), answer=preset["answer"],
                wrong_answer=preset["wrong_answer"])


@pytest.mark.parametrize("task", ["preset", "induction"])
def test_bundled_model_induction_circuit(task):
    model = bundled()
    (pl, ph), (il, ih) = top_heads(model)
    kwargs = preset_request() if task == "preset" else dict(task="induction", task_size=32, task_seq_len=8)
    graph = build_graph(model.cfg)
    total = int(graph.allowed.sum())
    budget = total // 10
    request = FaithfulnessRequest(method="eap_ig", n_edges=budget, curve_points=4, **kwargs)
    result = circuit_faithfulness(model, request)
    circuit = result.circuit
    assert int(circuit.sum()) <= 0.1 * total and result.total_edges == total
    kv = ih // (model.cfg.n_heads // model.cfg.n_key_value_heads)
    assert circuit[graph.head_sender(pl, ph), graph.receiver(il, "k", kv)], "previous-token head -> induction head key"
    assert circuit[graph.head_sender(il, ih), graph.receiver(0, "logits")], "induction head -> logits"
    assert result.circuit_normalized >= 0.8
    assert result.curve_normalized[-1] == pytest.approx(1.0, abs=1e-4)  # all edges: the clean run
    assert result.ablated_metric == pytest.approx(result.corrupted_metric, abs=1e-4)  # no edge: the corrupted run


def test_mean_ablation_feeds_every_receiver_the_mean_corrupted_output():
    """No edge kept under mean ablation: every receiver reads the mean (over prompts) of the corrupted
    run's senders, so the logits are those of the mean corrupted final residual."""
    model = tiny("gpt2")
    kwargs = dict(task="induction", task_size=4, task_seq_len=4, task_seed=3)
    task = task_from_request(model, EdgeAttributionRequest(**kwargs))
    n_layers = model.cfg.n_layers
    _, cache = model.run_with_cache(task.corrupted, names_filter=f"blocks.{n_layers - 1}.hook_resid_post")
    final = cache[f"blocks.{n_layers - 1}.hook_resid_post"].mean(0, keepdim=True).expand(task.corrupted.shape[0], -1, -1)
    logits = model.unembed(model.ln_final(final))[:, -1]
    by_hand = (logits.gather(-1, task.answers[:, None]) - logits.gather(-1, task.wrongs[:, None])).mean()
    result = circuit_faithfulness(model, FaithfulnessRequest(**kwargs, n_edges=5, curve_points=2, ablation="mean"))
    assert result.ablated_metric == pytest.approx(float(by_hand), abs=1e-4)
    assert result.ablated_metric != pytest.approx(result.corrupted_metric, abs=1e-3)
    assert result.curve_normalized[-1] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="ablation"):
        circuit_faithfulness(model, FaithfulnessRequest(**kwargs, n_edges=5, ablation="zero"))


def test_acdc_refinement_equals_a_plain_greedy_loop():
    from lens_core.experiments.edge_circuits.circuit_graph import prune, rank_edges
    from lens_core.experiments.edge_circuits.faithfulness import acdc_refine

    model = tiny("gpt2")
    request = EdgeAttributionRequest(**PAIR)
    scores = edge_attribution(model, request)
    start = select_circuit(scores, n_edges=20)
    graph = build_graph(model.cfg)
    task = task_from_request(model, request)
    threshold = 0.02
    refined = acdc_refine(model, request, start, threshold, batch=8)
    # The reference: one edge at a time, weakest first, each kept out if the metric moves < threshold.
    span = scores.clean_metric - scores.corrupted_metric
    current = start.clone()
    base = float(patched_metric(model, graph, task, current[None])[0])
    for flat in reversed(rank_edges(scores.scores, start).tolist()):
        trial = current.clone()
        trial.view(-1)[flat] = False
        value = float(patched_metric(model, graph, task, trial[None])[0])
        if abs(value - base) / abs(span) < threshold:
            current, base = trial, value
    assert torch.equal(refined, prune(current, scores.receiver_owners))
    assert int(refined.sum()) < int(start.sum())
    assert torch.equal(acdc_refine(model, request, start, 0.0), start)  # nothing moves the metric by < 0
