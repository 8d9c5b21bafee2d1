"""The sidebar's notebook export: the session's runs recorded in order, the notebook executed headless with nbclient,
its numbers equal to what the pages drew; user text escaped in markdown cells."""

from __future__ import annotations

import json

import pytest

from app_testkit import REPO_ROOT, errors, open_page, plotly_array, plotly_figure
from ui import links
from ui.notebook_export import LOG_KEY, Run, build_notebook, md_text

PROMPT = "one two three one two three one two"

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")


def as_notebook(runs):
    """The exported notebook as the button writes it, read back and validated by nbformat."""
    import json as _json

    notebook = nbformat.reads(_json.dumps(build_notebook(runs)), as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_user_text_in_markdown_cells_is_escaped():
    evil = "<script>alert(1)</script> **bold** [x](javascript:y)\n# heading"
    notebook = as_notebook([Run("predictions", "lens_core.experiments", "predictions", "PredictionsRequest",
                                   (("tokens", "(0, 1)"),), "default", "float32", (), evil)])
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "<script>" not in markdown and "**bold**" not in markdown and "](" not in markdown
    assert md_text(evil) in markdown and "\n# heading" not in markdown
    assert "\\<script\\>" in md_text(evil)


def test_exported_notebook_reruns_the_session_and_matches_the_pages(app_settings, model, tmp_path):
    at = open_page(links.page_file("Prompt_and_predictions"), prompt=PROMPT, top_k="3")
    assert not at.exception and errors(at) == []
    loss_shown = plotly_array(plotly_figure(at, "loss_chart")["data"][0]["y"])
    at.switch_page(links.page_file("Head_detectors"))
    at.query_params["detector"] = "induction"
    at.run()
    assert not at.exception and errors(at) == []
    induction_shown = plotly_array(plotly_figure(at, "detector_chart")["data"][0]["z"])
    assert [b.proto.label for b in at.sidebar.get("download_button")] == ["Export notebook"]

    runs = list(at.session_state[LOG_KEY])
    experiments = [r.experiment for r in runs]
    assert "predictions" in experiments and "head_detectors" in experiments
    assert experiments.index("predictions") < experiments.index("head_detectors")
    assert len(runs) == len(set(runs))  # a rerun of the same request is not logged twice

    notebook = as_notebook(runs)
    out = tmp_path / "numbers.json"
    from nbformat.v4 import new_code_cell

    notebook.cells.append(new_code_cell(
        "import json\n"
        f"json.dump([{{k: v.tolist() for k, v in vars(r).items() if isinstance(v, torch.Tensor)}} for r in results], "
        f"open({str(out)!r}, 'w'))"))
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    numbers = json.loads(out.read_text())
    assert len(numbers) == len(runs)
    shown = [i for i, r in enumerate(runs) if r.experiment == "predictions" and ("top_k", "3") in r.fields]
    assert shown, runs
    import numpy as np

    np.testing.assert_allclose(np.array(numbers[shown[0]]["loss_per_token"]), loss_shown, rtol=1e-5, atol=1e-5)
    detectors = next(i for i, r in enumerate(runs) if r.experiment == "head_detectors")
    np.testing.assert_allclose(np.array(numbers[detectors]["induction"], dtype=float), induction_shown, rtol=1e-5,
                               atol=1e-5)
    plots = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "application/vnd.plotly.v1+json" in o.get("data", {}) or "text/html" in o.get("data", {})]
    assert len(plots) >= len(runs)
