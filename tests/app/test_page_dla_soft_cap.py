"""The Direct logit attribution page on a model that soft-caps its logits (a tiny random Gemma 2): the components
decompose the logits before the cap, and the page says so, with the metric before the cap beside the model's."""

from __future__ import annotations

import torch

from app_testkit import errors, hf_logits, open_page
from hf_tiny import save_as_directory
from hf_tiny_families import gemma2
from tiny_model import write_settings

DLA = "app_pages/4_Direct_logit_attribution.py"
PROMPT = "the cat sat on the mat and the dog ran to the"


def test_soft_capped_model_shows_the_metric_before_the_cap(tmp_path, monkeypatch):
    model_dir = save_as_directory(gemma2(seed=1), tmp_path / "gemma2")
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(write_settings(tmp_path / "s.toml", model_dir, tmp_path / "c")))
    at = open_page(DLA, prompt=PROMPT, answer="park", wrong_answer="store")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []

    # The reference: transformers' final hidden state (after its final norm) times the unembedding, with no cap.
    from transformers import AutoModelForCausalLM

    tok, capped = hf_logits(model_dir, PROMPT)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tok.bos_token_id] + tok.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        hidden = hf.model(torch.tensor([ids])).last_hidden_state[0, -1].double()
        uncapped = hidden @ hf.lm_head.weight.double().T
    park, store = tok.convert_tokens_to_ids("park"), tok.convert_tokens_to_ids("store")

    metrics = {m.label: float(m.value) for m in at.metric}
    model_metric = next(v for k, v in metrics.items() if k.startswith("Model's"))
    assert abs(model_metric - float(capped[-1, park] - capped[-1, store])) < 2e-3
    before = metrics["The same before the soft cap"]
    assert abs(before - float(uncapped[park] - uncapped[store])) < 2e-3
    assert abs(before - model_metric) > 0.01  # the cap really bends it: the two differ
    parts = metrics["Sum of the components"] + metrics["Biases (final norm + unembedding)"]
    assert abs(parts - before) < 2e-3
    shown = " ".join(c.value for c in at.caption)
    assert "soft-caps its logits" in shown and "before the soft cap" in shown, shown
    from app_testkit import plotly_figure

    y_title = plotly_figure(at, "dla_decomposed")["layout"]["yaxis"]["title"]["text"]
    assert y_title.endswith("before the soft cap"), y_title  # the bars are logits before the cap


def test_graph_page_says_its_logit_nodes_are_before_the_soft_cap(tmp_path, monkeypatch):
    from app_settings import settings_toml
    from dictionary_writers import write_ct_set

    model_dir = save_as_directory(gemma2(seed=1), tmp_path / "gemma2")
    write_ct_set(tmp_path / "tc", n_layers=2, d_model=32, d_sae=16)
    text = settings_toml(tmp_path / "c", features=f'{model_dir!r} = [{str(tmp_path / "tc")!r}]')
    text = text.replace('allowlist = ["default"]', f"allowlist = [{model_dir!r}]")
    (tmp_path / "s.toml").write_text(text)
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(tmp_path / "s.toml"))
    at = open_page("app_pages/12_Attribution_graph.py", prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [], errors(at)
    shown = " ".join(c.value for c in at.caption)
    assert "last position before the soft cap" in shown and "the probabilities are the model's" in shown, shown
