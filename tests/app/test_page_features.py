"""Features page: no transcoders (a message), then the bundled model with random transcoders and dashboards in a
temporary directory: the token x feature chart, a dashboard and the unit on the prompt, steering from the URL,
bad inputs as messages."""

from __future__ import annotations

import pytest
import torch

from app_testkit import REPO_ROOT, assert_says_no_transcoders, errors, open_page, plotly_array, plotly_figure
from ui.feature_labels import parse_feature_id

PAGE = "app_pages/13_Features.py"
PROMPT = "def copy(self):\n    return self.data"


def test_a_model_without_transcoders_says_so(app_settings):
    assert_says_no_transcoders(PAGE)


@pytest.fixture
def bundled(tmp_path, monkeypatch, request):
    from features_support import random_set

    from lens_core import HookedTransformer
    from lens_core.features import save_transcoders, transcoder
    from lens_core.features.dashboards import build_dashboards, save_dashboards

    model = HookedTransformer.from_pretrained("default")
    tset = random_set(model, seed=3)
    directory = save_transcoders(tset, tmp_path / "transcoders")
    rows = model.to_tokens([PROMPT, "import os\nprint(os.getcwd())"])
    lengths = torch.tensor([len(model.to_tokens(PROMPT)[0]), rows.shape[1]])
    if request.param if hasattr(request, "param") else True:  # with dashboards (the default) or without
        save_dashboards(build_dashboards(model, tset, rows, lengths, n_top=3), directory, {"before": 16})
    monkeypatch.setattr(transcoder, "DEFAULT_TRANSCODERS_DIR", directory)
    text = (REPO_ROOT / "settings.toml").read_text(encoding="utf-8")
    text = text.replace('directory = ".cache/results"', f"directory = {str(tmp_path / 'cache')!r}")
    (tmp_path / "settings.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(tmp_path / "settings.toml"))
    return model, tset


def test_chart_dashboard_and_steering(bundled):
    model, tset = bundled
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    acts = tset[1].encode(cache["blocks.1.ln2.hook_normalized"])[0]
    strongest = int(acts.max(0).values.argmax())
    at = open_page(PAGE, prompt=PROMPT, layers="1", rows="4", unit_layer="1", unit_index=str(strongest),
                   edits=f"L1#{strongest}=9, L2#3=0", steer_at="the last position")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    fig = plotly_figure(at, "feature_chart")
    labels = fig["layout"]["yaxis"]["ticktext"]
    assert 0 < len(labels) <= 4 and all(label.startswith("L1#") for label in labels)
    first = parse_feature_id(labels[0])[1]
    assert plotly_array(fig["data"][0]["z"])[0] == pytest.approx(acts[:, first].tolist(), abs=1e-5)
    markdown = " ".join(m.value for m in at.markdown)
    assert f"L1\\#{strongest}" in markdown and "on this prompt" in markdown  # its label (# escaped)
    assert "Top 3 held-out contexts" in markdown  # the dashboard (built over two windows here)
    assert parse_feature_id(labels[0]) == (1, strongest)  # rows sorted by peak activation
    assert any("KL" in m.value for m in at.markdown)
    assert plotly_figure(at, "kl_chart")


def test_bad_inputs_are_messages(bundled):
    at = open_page(PAGE, prompt=PROMPT, unit_kind="neuron", unit_layer="0", unit_index="9999", edits="L1#7=x, L9#1=2")
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "Not understood" in warnings and "L1\\#7=x" in warnings  # named (markdown-escaped)
    shown = " ".join(e.value for e in at.error)
    assert "this dictionary has no features on layer 9" in shown and "layers 0, 1, 2" in shown, shown  # next to the edits
    assert "FeaturesUnavailable" not in shown and "Something went wrong" not in shown, shown
    notes = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning) + " ".join(
        i.value for i in at.info)
    assert "9999" in notes  # the out-of-range index from the link is named, and the nearest one used


def _top_tokens(model, layer: int, index: int) -> tuple[str | None, str]:
    """The feature's top input (None if it never fired on the dashboards' windows) and promoted token, read from its
    dashboard file directly (the reference)."""
    from lens_core.features import transcoder
    from lens_core.features.dashboards import Dashboards
    from ui.charts import visible

    unit = Dashboards(transcoder.DEFAULT_TRANSCODERS_DIR).unit("feature", layer, index)
    first_up = unit["logits_up"][0][0]
    first_in = visible(model.tokenizer.decode([unit["inputs"][0]["token"]])) if unit.get("inputs") else None
    return first_in, visible(model.tokenizer.decode([first_up]))


def test_features_are_named_by_their_top_tokens_in_every_list(bundled):
    """Issue 23: features were listed by id only (L1#17) until clicked."""
    import html

    model, tset = bundled
    at = open_page(PAGE, prompt=PROMPT, layers="1", rows="4", edits="L1#3=2, L2#5=0")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    ticks = [html.unescape(t) for t in plotly_figure(at, "feature_chart")["layout"]["yaxis"]["ticktext"]]
    for tick in ticks:
        layer, index = parse_feature_id(tick)
        top_in, top_up = _top_tokens(model, layer, index)
        assert top_in is not None  # it fires on this prompt, one of the dashboards' windows
        assert tick.startswith(f"L{layer}#{index}:{(top_in[:9] + '…' if len(top_in) > 10 else top_in)!r}→"), tick
    per_token = next(d.value for d in at.dataframe if "features" in d.value.columns)
    named = [piece for cell in per_token["features"] for piece in cell.split(", ") if piece]
    assert named and all("'" in piece for piece in named)  # each with its tokens, not just "#17:0.52"
    edits = next(d.value for d in at.dataframe if list(d.value.columns) == ["feature", "set to"])
    assert [parse_feature_id(f) for f in edits["feature"]] == [(1, 3), (2, 5)]
    top_in, top_up = _top_tokens(model, 2, 5)
    assert (top_in is None or f"on {top_in!r}" in edits["feature"][1]) and f"→ {top_up!r}" in edits["feature"][1]
    from ui.feature_labels import NO_DASHBOARDS

    assert not [c for c in at.caption if c.value == NO_DASHBOARDS]


@pytest.mark.parametrize("bundled", [False], indirect=True)
def test_without_dashboards_the_page_says_so_once(bundled):
    from ui.feature_labels import NO_DASHBOARDS

    at = open_page(PAGE, prompt=PROMPT, layers="1", rows="4", edits="L1#3=2, L2#5=0")
    assert not at.exception, [e.value for e in at.exception]
    assert len([c for c in at.caption if c.value == NO_DASHBOARDS]) == 1
    ticks = plotly_figure(at, "feature_chart")["layout"]["yaxis"]["ticktext"]
    assert ticks and all(parse_feature_id(t) and t == f"L{parse_feature_id(t)[0]}#{parse_feature_id(t)[1]}" for t in ticks)
