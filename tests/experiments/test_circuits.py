import pytest
import torch

from lens_core.experiments.views.circuits import (CompositionRequest, HeadCircuitsRequest, composition,
                                                  composition_scores, full_ov_circuit, head_circuits, ov_circuit,
                                                  ov_copying_scores, qk_circuit)

from exp_tiny import tiny


def _dense(model, layer, head):
    W = lambda w: getattr(model.blocks[layer].attn, w).double()  # noqa: E731  per-layer weights, read directly
    kv = head // model.cfg.n_kv_groups
    qk = W("W_Q")[head] @ W("W_K")[kv].T
    ov = W("W_V")[kv] @ W("W_O")[head]
    return qk, ov


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_circuits_match_dense_products(family):
    model = tiny(family)
    for l, h in [(0, 1), (2, 3)]:
        qk, ov = _dense(model, l, h)
        torch.testing.assert_close(qk_circuit(model)[l, h].AB.double(), qk, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ov_circuit(model)[l, h].AB.double(), ov, atol=1e-5, rtol=1e-5)
        full = model.W_E.double() @ ov @ model.W_U.double()
        torch.testing.assert_close(full_ov_circuit(model, l, h).AB.double(), full, atol=1e-4, rtol=1e-4)
        eig = torch.linalg.eigvals(full)
        expected = float(eig.sum().real / eig.abs().sum())
        assert float(ov_copying_scores(model)[l, h]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_composition_scores_match_dense_products(family):
    model = tiny(family)
    scores = {kind: composition_scores(model, kind) for kind in "qkv"}
    frob = torch.linalg.matrix_norm
    for (l1, h1), (l2, h2) in [((0, 0), (1, 2)), ((0, 3), (2, 1)), ((1, 1), (2, 0))]:
        _, ov1 = _dense(model, l1, h1)
        qk2, ov2 = _dense(model, l2, h2)
        expected = {
            "q": frob(ov1 @ qk2) / (frob(ov1) * frob(qk2)),
            "k": frob(ov1 @ qk2.T) / (frob(ov1) * frob(qk2)),
            "v": frob(ov1 @ ov2) / (frob(ov1) * frob(ov2)),
        }
        for kind in "qkv":
            assert float(scores[kind][l1, h1, l2, h2]) == pytest.approx(float(expected[kind]), rel=1e-4)
    assert torch.isnan(scores["q"][1, 0, 1, 0]) and torch.isnan(scores["v"][2, 0, 0, 0])
    result = composition(model, CompositionRequest(min_layer_gap=2))
    n = model.cfg.n_heads
    assert float(result.k[0 * n + 3, 2 * n + 1]) == pytest.approx(float(scores["k"][0, 3, 2, 1]), rel=1e-6)
    assert torch.isnan(result.k[0, n]).item()  # layer gap 1 excluded
    assert result.head_labels[n] == "L1H0"


def test_head_circuits_top_tokens_by_dense_rows():
    model = tiny("gpt2")
    result = head_circuits(model, HeadCircuitsRequest(layer=1, head=2, source_tokens=(3, 9), top_k=4))
    _, ov = _dense(model, 1, 2)
    full = model.W_E.double() @ ov @ model.W_U.double()
    for i, src in enumerate([3, 9]):
        values, ids = full[src].topk(4)
        assert result.top_output_ids[i].tolist() == ids.tolist()
        torch.testing.assert_close(result.top_output_values[i].double(), values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.ov_singular_values.double(), torch.linalg.svdvals(ov)[:8], atol=1e-5, rtol=1e-4)
    default = head_circuits(model, HeadCircuitsRequest(layer=1, head=2, n_source_tokens=3))
    assert default.source_token_ids.tolist() == full.diagonal().topk(3).indices.tolist()
    with pytest.raises(ValueError, match="layer"):
        head_circuits(model, HeadCircuitsRequest(layer=3, head=0))
