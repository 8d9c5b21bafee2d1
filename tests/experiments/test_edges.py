"""EAP / EAP-IG edge scores against dot products computed by hand; the graph; circuit selection."""

import pytest
import torch
from exp_tiny import tiny

import edge_reference
from lens_core.experiments.edge_circuits.circuit_graph import circuit_json, edge_table, prune, select_circuit
from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, build_graph, edge_attribution

CLEAN, CORRUPTED = (3, 8, 1, 20, 7, 11), (3, 9, 1, 21, 7, 12)
ANSWER, WRONG = 4, 5
# (sender, receiver) pairs checked by hand: every kind of sender and receiver.
EDGES = [("embed", "L1H2.q"), ("L0H1", "L2H0.k"), ("MLP0", "L1H3.v"), ("L1H0", "MLP1.in"), ("MLP2", "logits"),
         ("embed", "logits")]


def sender_value(cache, name):
    """A sender's output from a plain run_with_cache."""
    if name == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if name.startswith("MLP"):
        return cache[f"blocks.{name[3:]}.hook_mlp_out"]
    layer, head = int(name[1]), int(name[3])
    return cache[f"blocks.{layer}.attn.hook_result"][:, :, head]


def receiver_gradient(model, resid0, name):
    """d metric / d receiver input, by replacing that one input with a leaf tensor."""
    return edge_reference.receiver_gradient(model, resid0, name, ANSWER, WRONG)


def hand_score(model, name_s, name_r, alphas=(1.0,)):
    names = lambda n: n == "blocks.0.hook_resid_pre" or n.endswith(("hook_result", "hook_mlp_out"))  # noqa: E731
    _, clean = model.run_with_cache(torch.tensor([CLEAN]), names_filter=names)
    _, corrupt = model.run_with_cache(torch.tensor([CORRUPTED]), names_filter=names)
    delta = sender_value(corrupt, name_s) - sender_value(clean, name_s)
    emb_clean, emb_corrupt = sender_value(clean, "embed"), sender_value(corrupt, "embed")
    grads = [receiver_gradient(model, emb_corrupt + a * (emb_clean - emb_corrupt), name_r) for a in alphas]
    return float((delta * torch.stack(grads).mean(0)).sum())


@pytest.mark.parametrize("family,method", [("gpt2", "eap"), ("gpt2", "eap_ig"), ("llama", "eap"), ("neox", "eap_ig")])
def test_scores_are_the_hand_dot_products(family, method):
    model = tiny(family, fold=False)
    request = EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=ANSWER, wrong_answer=WRONG,
                                     method=method, ig_steps=3)
    result = edge_attribution(model, request)
    alphas = (1.0,) if method == "eap" else (1 / 3, 2 / 3, 1.0)
    edges = EDGES if family != "llama" else [(s, r.replace("L2H0.k", "L2KV0.k").replace("L1H3.v", "L1KV1.v")) for s, r in EDGES]
    for s, r in edges:
        got = float(result.scores[result.senders.index(s), result.receivers.index(r)])
        if not result.allowed[result.senders.index(s), result.receivers.index(r)]:
            assert family == "neox" and (s, r) == ("L1H0", "MLP1.in") and got == 0.0  # parallel: no such edge
            continue
        assert got == pytest.approx(hand_score(model, s, r, alphas), rel=1e-4, abs=1e-5), (s, r)
    # per-position scores sum to the scores; no score off the graph
    torch.testing.assert_close(result.scores_by_pos.sum(-1), result.scores)
    assert bool((result.scores[~result.allowed] == 0).all())


def test_graph_edges_follow_the_residual_stream():
    cfg = tiny("gpt2").cfg  # 3 layers, 4 heads, sequential attention then MLP
    graph = build_graph(cfg)
    L, H = cfg.n_layers, cfg.n_heads
    assert len(graph.senders) == 1 + L * (H + 1) and len(graph.receivers) == L * (3 * H + 1) + 1
    # attention inputs of layer l see 1 + l*(H+1) senders, the MLP of layer l one layer's heads more
    expected = sum(3 * H * (1 + l * (H + 1)) + (1 + l * (H + 1) + H) for l in range(L)) + len(graph.senders)
    assert int(graph.allowed.sum()) == expected
    a = graph.allowed
    assert a[graph.head_sender(1, 0), graph.receiver(1, "mlp")] and not a[graph.head_sender(1, 0), graph.receiver(1, "q", 2)]
    assert not a[graph.mlp_sender(1), graph.receiver(1, "mlp")]
    parallel = build_graph(tiny("neox").cfg)  # parallel attention and MLP: a layer's heads do not feed its MLP
    assert not parallel.allowed[parallel.head_sender(1, 0), parallel.receiver(1, "mlp")]
    gqa = build_graph(tiny("llama").cfg)  # keys and values per key/value head
    assert "L0KV1.k" in gqa.receivers and len(gqa.receiver_owners[gqa.receiver(0, "k", 1)]) == 2


def test_pruning_keeps_only_paths_from_embed_to_logits():
    graph = build_graph(tiny("gpt2").cfg)
    kept = torch.zeros_like(graph.allowed)
    on_path = [("embed", "L0H1.v"), ("L0H1", "L2H0.k"), ("L2H0", "logits")]
    dangling = [("L0H2", "L1H0.q"),  # L0H2 gets no input in the circuit
                ("embed", "L1H1.q")]  # L1H1 writes nowhere
    for s, r in on_path + dangling:
        kept[graph.senders.index(s), graph.receivers.index(r)] = True
    pruned = prune(kept, graph.receiver_owners)
    assert {(graph.senders[s], graph.receivers[r]) for s, r in pruned.nonzero().tolist()} == set(on_path)


def test_selection_by_size_or_threshold_and_its_errors():
    model = tiny("gpt2")
    result = edge_attribution(model, EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED,
                                                            answer=ANSWER, wrong_answer=WRONG))
    everything = select_circuit(result, n_edges=result.n_edges)
    assert torch.equal(everything, result.allowed)  # every edge lies on some path
    table = edge_table(result)
    assert len(table) == result.n_edges and abs(table[0]["score"]) >= abs(table[-1]["score"])
    small = select_circuit(result, threshold=abs(table[9]["score"]))
    assert int(small.sum()) <= 10
    for bad in (0, result.n_edges + 1):
        with pytest.raises(ValueError, match="between 1 and"):
            select_circuit(result, n_edges=bad)
    with pytest.raises(ValueError, match="method"):
        edge_attribution(model, EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=4, method="acdc"))
    with pytest.raises(ValueError, match="same number of tokens"):
        edge_attribution(model, EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED[:-1], answer=4))


def test_circuit_json_follows_its_schema():
    model = tiny("llama")  # grouped-query: a key receiver is shared by two heads
    result = edge_attribution(model, EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED,
                                                            answer=ANSWER, wrong_answer=WRONG))
    mask = select_circuit(result, n_edges=result.n_edges)
    graph = circuit_json(result, mask, model_name="tiny")
    assert graph["schema"] == "circuit-explorer/circuit-graph@1" and graph["total_edges"] == result.n_edges
    ids = {n["id"] for n in graph["nodes"]}
    assert {"embed", "logits", "L0H0", "MLP2"} <= ids
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    shared = [e for e in graph["edges"] if e["receiver"] == "L1KV0.k" and e["source"] == "embed"]
    assert sorted(e["target"] for e in shared) == ["L1H0", "L1H1"] and {e["input"] for e in shared} == {"k"}
    # one JSON edge per (edge, reading head): grouped key/value receivers count once per head
    extra = sum(len(result.receiver_owners[r]) - 1 for s, r in mask.nonzero().tolist() if result.receivers[r][-1] in "kv")
    assert len(graph["edges"]) == int(mask.sum()) + extra


@pytest.mark.parametrize("method", ["eap", "eap_ig"])
def test_scores_are_the_same_inside_inference_mode(method):
    model = tiny("gpt2")
    request = EdgeAttributionRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=ANSWER, wrong_answer=WRONG,
                                     method=method, ig_steps=2)
    plain = edge_attribution(model, request)
    with torch.inference_mode():
        inside = edge_attribution(model, request)
    torch.testing.assert_close(inside.scores, plain.scores)
