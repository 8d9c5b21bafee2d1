"""The Browse examples page on the bundled model: URL state in, lens_core's ranking and example panel out;
uploads that are binary, empty or over a cap get their message; a model the bundled corpus does not fit."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch

from app_testkit import errors, open_page, plotly_array, plotly_figure

PAGE = "app_pages/14_Browse_examples.py"




@pytest.fixture(scope="module")
def bundled():
    from lens_core import HookedTransformer

    return HookedTransformer.from_pretrained("default")


def test_browse_from_url_shows_lens_core_ranking_and_example(bundled_settings, bundled):
    from lens_core.experiments.corpus.browse import BrowseRequest, browse
    from lens_core.experiments.corpus.browse_example import BrowseExampleRequest, browse_example

    expected = browse(bundled, BrowseRequest(component=("head", 1, 3), method="zero", window_stop=6))
    w, p = expected.rise[2].tolist()
    at = open_page(PAGE, component="L1H3", abl_method="zero", n_windows="6", example=f"{w}:{p}")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.text_input(key="component").value == "L1H3" and at.number_input(key="n_windows").value == 6
    hist = plotly_figure(at, "histogram")
    change = expected.loss_change
    shown = plotly_array(hist["data"][0]["x"])
    assert len(shown) == int(change.isfinite().sum()) == 6 * 127
    assert sorted(shown.tolist()) == pytest.approx(sorted(change[change.isfinite()].tolist()), abs=1e-5)
    # The log axis reads in decades (1, 10, 100, ...) up to the tallest bar, not plotly's crowded 2s and 5s.
    counts, _ = np.histogram(shown, bins=120)
    yaxis = hist["layout"]["yaxis"]
    assert yaxis["type"] == "log" and yaxis["tickmode"] == "array"
    assert list(yaxis["tickvals"]) == [10 ** k for k in range(len(yaxis["tickvals"]))]
    assert yaxis["tickvals"][-1] >= counts.max() > yaxis["tickvals"][-1] / 10
    assert list(yaxis["ticktext"]) == [f"{v:,}" for v in yaxis["tickvals"]]
    # The ranked rows, in lens_core's order, each with its change.
    rows = [m.value for m in at.markdown if m.value.startswith('<div style="display:flex')]
    assert len(rows) == 20
    for rank, row in enumerate(rows[:5]):
        rw, rp = expected.rise[rank].tolist()
        assert f"#{rank + 1} {float(change[rw, rp]):+.2f}" in row
    # The selected example (from the URL) matches browse_example.
    assert at.selectbox(key="example").value == f"{w}:{p}"
    panel = browse_example(bundled, BrowseExampleRequest(component=("head", 1, 3), method="zero", window=w, position=p))
    assert float(at.metric[4].value) == pytest.approx(panel.loss_after, abs=1e-3)
    assert f"was {panel.loss_before:.3f}" in at.metric[4].proto.delta
    assert float(at.metric[6].value) == pytest.approx(panel.dla, abs=1e-3)
    att = plotly_figure(at, "example_attention")
    torch.testing.assert_close(torch.tensor(plotly_array(att["data"][0]["y"])), panel.attention.double(), atol=1e-5, rtol=0)
    # Switching to the falls re-ranks; the picked example stays picked, without a notice.
    at.radio(key="rank").set_value("fall").run()
    rows = [m.value for m in at.markdown if m.value.startswith('<div style="display:flex')]
    fw, fp = expected.fall[0].tolist()
    assert f"#1 {float(change[fw, fp]):+.2f}" in rows[0]
    assert at.selectbox(key="example").value == f"{w}:{p}" and not at.warning
    # Any token of the corpus can be linked to, ranked or not; one outside it is named and replaced.
    at = open_page(PAGE, component="L1H3", abl_method="zero", n_windows="6", example="5:3")
    assert at.selectbox(key="example").value == "5:3" and not at.warning
    at = open_page(PAGE, component="L1H3", abl_method="zero", n_windows="6", example="99:3")
    assert at.selectbox(key="example").value == f"{expected.rise[0, 0]}:{expected.rise[0, 1]}"
    assert any("example=99" in w.value and "was ignored" in w.value for w in at.warning)


def test_bad_component_gets_a_message(bundled_settings):
    at = open_page(PAGE, component="L9H9", n_windows="2")
    assert not at.exception
    assert any("layer" in e for e in errors(at))


def test_token_strip_escapes_token_text():
    from ui.token_html import token_strip

    out = token_strip(["<img src=x onerror=alert(1)>", ' "q"'], [1.0, -0.5], 1.0, highlight=0)
    assert "<img" not in out and html.escape("<img src=x onerror=alert(1)>") in out
    assert "rgba(214,39,40,0.850)" in out and "rgba(31,119,180,0.425)" in out


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8"),
    (b"", "empty"),
    (b"x = 1\n" * 100_000, "the limit is 524,288 bytes"),
    ("".join(chr(0x4E00 + i % 500) for i in range(150_000)), "tokens; the limit is 100,000"),
], ids=["binary", "empty", "over_bytes", "over_tokens"])
def test_uploads_that_cannot_be_used_get_a_message(bundled, data, message):
    from ui.corpus_input import check_upload

    data = data.encode() if isinstance(data, str) else data
    text, error = check_upload(bundled, "f.txt", data)
    assert text is None and error.startswith("f.txt: ") and message in error
    text, error = check_upload(bundled, "ok.py", "def f(x):\n    return x\n".encode())
    assert error is None and text == "def f(x):\n    return x\n"


def test_another_model_is_asked_for_a_file(app_settings):
    at = open_page(PAGE)
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="corpus").value == "upload"
    assert any("Upload a text file" in i.value for i in at.info)
    at.radio(key="corpus").set_value("default").run()
    assert any("another tokenizer" in w.value for w in at.warning)


def test_snippet_reads_an_upload_back_from_its_file():
    from ui.corpus_input import CorpusChoice
    from ui.export import experiment_snippet

    from lens_core.experiments.corpus.browse import BrowseRequest, browse

    class Ctx:
        model_name, dtype = "default", "float32"

    choice = CorpusChoice("x = 1\n", "up.py", "up'.py")
    request = BrowseRequest(component=("head", 1, 3), corpus_text=choice.text)
    code = choice.fix_snippet(experiment_snippet(Ctx(), browse, request, "print(result.stats)", **choice.snippet_args()))
    assert "corpus_text=open(\"up'.py\", encoding='utf-8').read()," in code
    compile(code, "snippet", "exec")


def test_a_transcoder_feature_runs_or_says_why_not(bundled_settings):
    from lens_core.features.transcoder import DEFAULT_TRANSCODERS_DIR, WEIGHTS_FILE

    at = open_page(PAGE, component="L1F3", abl_method="zero", n_windows="2")
    assert not at.exception, [e.value for e in at.exception]
    if (DEFAULT_TRANSCODERS_DIR / WEIGHTS_FILE).is_file():
        assert errors(at) == [] and plotly_figure(at, "histogram")
    else:
        assert any("Transcoder features need transcoders" in e for e in errors(at))
