import pytest
import torch

from lens_core.experiments.graphs._replacement import build_graph

from exp_tiny import random_tokens, tiny, tiny_graph_case
from graph_reference import reference_rows
from graph_support import random_transcoders

CASES = [("gpt2", True), ("gpt2", False), ("llama", True), ("llama", False)]


@pytest.mark.parametrize("family,fold", CASES)
def test_each_node_input_is_its_edges_plus_bias(family, fold):
    model = tiny(family, fold)
    tset = random_transcoders(model, activation="topk" if fold else "jumprelu")
    tokens = random_tokens(9, seed=3)
    graph = build_graph(model, tset, tokens, max_logits=4, logit_mass=0.99)
    assert graph.n_features > 20
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_node(0), graph.n_nodes)])
    total = graph.adjacency[rows].sum(1) + graph.node_bias[rows]
    torch.testing.assert_close(total, graph.node_input[rows], atol=1e-4, rtol=0)
    # The logit inputs are the real model's demeaned logits (independent of the graph).
    logits = model(tokens)[0, -1].float()
    torch.testing.assert_close(graph.node_input[graph.logit_node(0):], (logits - logits.mean())[graph.logit_tokens],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,fold", [("gpt2", True), ("llama", False)])
def test_feature_edges_match_autograd_through_the_frozen_model(family, fold):
    model, tset, tokens = tiny_graph_case(family, fold, 8, 4)
    graph = build_graph(model, tset, tokens, max_logits=2)
    top_layer = graph.feature_layer == model.cfg.n_layers - 1
    targets = top_layer.nonzero()[:, 0][[0, 5, -1]].tolist()
    expected = reference_rows(model, tset, tokens, graph, targets)
    got = graph.adjacency[targets]
    keep = torch.zeros(graph.n_nodes, dtype=torch.bool)
    keep[: graph.n_features] = True
    keep[graph.embedding_node(0): graph.embedding_node(0) + graph.n_pos] = True
    torch.testing.assert_close(got[:, keep], expected[:, keep], atol=1e-4, rtol=1e-4)
    assert expected[:, keep].abs().max() > 1e-2  # not a comparison of zeros
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # the error nodes' edges too


def _frozen_replacement_logits(model, tset, tokens, graph, clamps):
    """Demeaned last-position logits of the frozen replacement model (cached patterns and norm scales,
    MLPs replaced by transcoders plus the clean prompt's error), with features clamped: by hooks on the
    model's own forward pass, independent of the graph's matrices."""
    n = model.cfg.n_layers
    names = lambda name: name.endswith(("hook_pattern", "hook_scale", "hook_mlp_out")) or name in [tc.cfg.hook_in for tc in tset]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    errors = {l: cache[f"blocks.{l}.hook_mlp_out"] - tset[l](cache[tset[l].cfg.hook_in]) for l in range(n)}
    inputs = {}

    def splice(y, hook):
        l = hook.layer()
        acts = tset[l].encode(inputs[l]).clone()
        for layer, pos, feat, value in clamps:
            if layer == l:
                acts[0, pos, feat] = value
        return tset[l].decode(acts) + errors[l]

    hooks = [(name, lambda x, hook: cache[hook.name]) for name in cache.keys() if name.endswith(("hook_pattern", "hook_scale"))]
    for l in range(n):
        hooks += [(tset[l].cfg.hook_in, lambda x, hook: inputs.__setitem__(hook.layer(), x)),
                  (f"blocks.{l}.hook_mlp_out", splice)]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()
    return logits - logits.mean()


def test_predicted_effect_is_exact_in_the_frozen_replacement_model():
    from lens_core.experiments.graphs._graph_prune import predicted_effects

    model = tiny("gpt2", True)
    tset = random_transcoders(model, activation="relu", always_on=False)  # small clamps keep every active feature active
    tokens = random_tokens(8, seed=6)
    graph = build_graph(model, tset, tokens, max_logits=3)
    base = _frozen_replacement_logits(model, tset, tokens, graph, [])
    torch.testing.assert_close(base[graph.logit_tokens], graph.node_input[graph.logit_node(0):], atol=1e-4, rtol=0)
    strongest = graph.adjacency[graph.logit_node(0), : graph.n_features].abs().argmax()
    layer0_last = ((graph.feature_layer == 0) & (graph.feature_pos == graph.n_pos - 1)).nonzero()[0, 0]
    for node in (int(strongest), int(layer0_last)):
        layer, pos, feat = int(graph.feature_layer[node]), int(graph.feature_pos[node]), int(graph.feature_index[node])
        value = 0.9 * float(graph.activations[node])
        after = _frozen_replacement_logits(model, tset, tokens, graph, [(layer, pos, feat, value)])
        predicted = predicted_effects(graph, [[(node, value)]])[graph.logit_node(0):, 0]
        actual = (after - base)[graph.logit_tokens]
        torch.testing.assert_close(predicted, actual, atol=1e-4, rtol=1e-3)
        assert actual.abs().max() > 1e-3
