"""The circuits page through streamlit.testing: every number against dense products of the weights, computed here."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import errors, open_page, plotly_array, plotly_figure

PAGE = "app_pages/10_Circuits.py"
PROMPT = "The cat sat on the mat. The dog"


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def dense_full_ov(model, layer: int, head: int) -> torch.Tensor:
    """W_E W_V W_O W_U as one dense [d_vocab, d_vocab] matrix (fine for the tiny vocabulary)."""
    return model.W_E.double() @ model.W_V[layer, head].double() @ model.W_O[layer, head].double() @ model.W_U.double()


def test_inputs_from_url_and_every_chart_against_dense_weights(app_settings, model):
    at = run_page(prompt=PROMPT, layer="1", head="2", ov_src="top", n_src="4", top_k="3", comp="q")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [] and len(at.warning) == 0
    assert at.slider(key="layer").value == 1 and at.slider(key="head").value == 2
    assert at.radio(key="ov_src").value == "top" and at.number_input(key="n_src").value == 4
    assert at.slider(key="top_k").value == 3 and at.radio(key="comp").value == "q"
    cfg = model.cfg

    # Copying score of every head: all d_vocab eigenvalues of the dense full OV circuit.
    expected = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            eig = torch.linalg.eigvals(dense_full_ov(model, l, h))
            expected[l, h] = eig.sum().real / eig.abs().sum()
    shown = torch.tensor(plotly_array(plotly_figure(at, "copying_chart")["data"][0]["z"]))
    torch.testing.assert_close(shown, expected, atol=2e-3, rtol=1e-3)
    assert float(at.metric[0].value) == pytest.approx(float(expected[1, 2]), abs=2e-3)

    # Singular values of L1H2's QK and OV circuits: the top d_head of the dense d_model x d_model products.
    d_head = cfg.d_head
    qk = model.W_Q[1, 2].double() @ model.W_K[1, 2].double().T
    ov = model.W_V[1, 2].double() @ model.W_O[1, 2].double()
    fig = plotly_figure(at, "singular_values_chart")
    torch.testing.assert_close(torch.tensor(plotly_array(fig["data"][0]["y"])), torch.linalg.svdvals(qk)[:d_head], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(plotly_array(fig["data"][1]["y"])), torch.linalg.svdvals(ov)[:d_head], atol=1e-4, rtol=1e-4)
    assert "L1H2" in fig["layout"]["title"]["text"]

    # Full OV table: the 4 tokens with the largest diagonal entries, each with its row's top 3.
    full = dense_full_ov(model, 1, 2)
    table = at.dataframe[0].value
    sources = full.diagonal().topk(4).indices
    assert list(table["source id"]) == sources.tolist()
    values, ids = full[sources].topk(3, dim=-1)
    torch.testing.assert_close(torch.tensor(table[["logit 1", "logit 2", "logit 3"]].to_numpy(dtype=float)), values, atol=1e-4, rtol=1e-4)
    visible = lambda t: model.to_string([t]).replace(" ", "␣").replace("\n", "↵")  # noqa: E731
    assert list(table["out 1"]) == [visible(t) for t in ids[:, 0].tolist()]
    assert list(table["copies itself"]) == [int(s) in row for s, row in zip(sources.tolist(), ids.tolist())]

    # Q-composition of every writer head in layer 0 with every reader head in layer 1, from dense matrices.
    comp = torch.tensor(plotly_array(plotly_figure(at, "composition_chart")["data"][0]["z"]))
    n = cfg.n_layers * cfg.n_heads
    assert comp.shape == (n, n)
    for h1 in range(cfg.n_heads):
        W_A = model.W_V[0, h1].double() @ model.W_O[0, h1].double()
        for h2 in range(cfg.n_heads):
            W_B = model.W_Q[1, h2].double() @ model.W_K[1, h2].double().T
            score = torch.linalg.norm(W_A @ W_B) / (torch.linalg.norm(W_A) * torch.linalg.norm(W_B))
            assert float(comp[h1, cfg.n_heads + h2]) == pytest.approx(float(score), rel=1e-4)
    # No composition within a layer or backwards.
    assert torch.isnan(comp[cfg.n_heads:, :]).all() and torch.isnan(comp[:, : cfg.n_heads]).all()


@pytest.mark.parametrize("kind", ["k", "v"])
def test_k_and_v_composition_against_dense_weights(app_settings, model, kind):
    at = run_page(prompt=PROMPT, comp=kind)
    assert not at.exception and errors(at) == []
    comp = torch.tensor(plotly_array(plotly_figure(at, "composition_chart")["data"][0]["z"]))
    nh = model.cfg.n_heads
    W_A = model.W_V[0, 3].double() @ model.W_O[0, 3].double()
    Q, K, V, O = (w[1, 1].double() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    W_B = K @ Q.T if kind == "k" else V @ O
    score = torch.linalg.norm(W_A @ W_B) / (torch.linalg.norm(W_A) * torch.linalg.norm(W_B))
    assert float(comp[3, nh + 1]) == pytest.approx(float(score), rel=1e-4)


def test_prompt_tokens_as_sources_and_no_vocab_square_is_formed(app_settings, model, monkeypatch):
    from lens_core.factored_matrix import FactoredMatrix

    dense = FactoredMatrix.AB

    def refuse_vocab_square(self):
        if self.ldim >= model.cfg.d_vocab and self.rdim >= model.cfg.d_vocab:
            raise AssertionError(f"a {self.ldim} x {self.rdim} matrix was materialized")
        return dense.fget(self)

    monkeypatch.setattr(FactoredMatrix, "AB", property(refuse_vocab_square))
    at = run_page(prompt=PROMPT, layer="0", head="1", ov_src="prompt", top_k="2")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    ids = model.to_tokens(PROMPT)[0].tolist()
    unique = list(dict.fromkeys(i for i in ids if i != model.tokenizer.bos_token_id))
    table = at.dataframe[0].value
    assert list(table["source id"]) == unique
    full = dense_full_ov(model, 0, 1)
    torch.testing.assert_close(torch.tensor(table[["logit 1", "logit 2"]].to_numpy(dtype=float)), full[unique].topk(2).values,
                               atol=1e-4, rtol=1e-4)


def test_out_of_range_layer_and_head_in_a_link_are_named_and_fall_back(app_settings):
    at = run_page(prompt=PROMPT, layer="9", head="banana")
    assert not at.exception and errors(at) == []
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert any("layer=9 was ignored" in w and "0–1" in w and "nearest" in w for w in warnings), warnings
    assert any("head=banana was ignored" in w and "whole number" in w for w in warnings), warnings
    assert at.slider(key="layer").value == 1 and at.slider(key="head").value == 0
    plotly_figure(at, "copying_chart")


def test_changed_inputs_are_written_to_the_url(app_settings):
    at = run_page(prompt=PROMPT)
    at.slider(key="head").set_value(3).run()
    at.radio(key="comp").set_value("v").run()
    at.radio(key="ov_src").set_value("prompt").run()
    assert not at.exception
    assert at.query_params["head"] in ("3", ["3"])
    assert at.query_params["comp"] in ("v", ["v"])
    assert at.query_params["ov_src"] in ("prompt", ["prompt"])
