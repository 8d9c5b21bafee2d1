"""Export what this session ran as a Jupyter notebook that reproduces it with ``lens_core`` offline.

``ui.model.run_experiment`` (the one path every page's experiment goes through) calls :func:`record_run`, which
keeps each distinct request of the session in order, with the model (name and dtype) it ran on. The sidebar's
"Export notebook" button builds the notebook from that log when clicked (:func:`build_notebook`): one cell loads each
model once, then per run a cell that rebuilds the request and runs the experiment (what the "Copy as Python"
snippets do, with the token ids the app used, so the numbers are the same) and a plot of its main tensor.

Text the user typed (prompts) reaches markdown cells only through :func:`md_text` (escaped); in code cells it is a
``repr`` literal.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import importlib
import json
import logging
from typing import Any

import streamlit as st

LOG_KEY = "_notebook_log"  # session_state: list of run entries, in the order first run
SKIPPED_KEY = "_notebook_log_skipped"  # session_state: {"n": runs that could not be written as cells}
MAX_RUNS = 200  # a session's log is bounded; later runs are counted, not kept
MAX_LITERAL = 200_000  # characters of one request's literal (a whole corpus is left out, and said so)
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Run:
    experiment: str
    module: str  # where fn and its request class are imported from
    function: str
    request_class: str
    fields: tuple  # ((name, literal source), ...): fields that differ from the request's defaults
    model_name: str
    dtype: str
    kwargs: tuple = ()  # names of the extra inputs the function took ("transcoders")
    prompt: str | None = None  # the request's tokens decoded, for the markdown


def _import_path(fn: Any) -> str | None:
    """``lens_core.experiments`` when it exports ``fn`` (the stable import), else its own module; None if neither."""
    for module in ("lens_core.experiments", fn.__module__):
        try:
            if getattr(importlib.import_module(module), fn.__name__, None) is fn:
                return module
        except ImportError:
            continue
    return None


def _literal(value: Any) -> str:
    text = repr(value)
    ast.literal_eval(text)  # raises on anything a notebook could not rebuild from its text
    return text


def make_run(model: Any, experiment: str, fn: Any, request: Any, fn_kwargs: dict) -> Run | None:
    """The log entry of one run, or None when it cannot be written as a notebook cell."""
    from ui.compute import _MODEL_KEYS

    key = _MODEL_KEYS.get(model)
    module = _import_path(fn)
    if key is None or module is None or not dataclasses.is_dataclass(request):
        return None
    request_module = importlib.import_module(module)
    if getattr(request_module, type(request).__name__, None) is not type(request):
        module = fn.__module__
    fields = []
    for f in dataclasses.fields(request):
        value = getattr(request, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        fields.append((f.name, _literal(value)))
    kwargs = tuple(sorted(k for k in fn_kwargs if k != "progress"))
    if set(kwargs) - {"transcoders"}:
        return None
    prompt = None
    tokens = getattr(request, "tokens", None) or getattr(request, "clean_tokens", None)
    if tokens:
        try:
            prompt = model.to_string(list(tokens))
        except Exception:  # noqa: BLE001 - the markdown goes without it
            prompt = None
    return Run(experiment, module, fn.__name__, type(request).__name__, tuple(fields), key[0], key[1], kwargs, prompt)


def _log() -> tuple[list, dict]:
    """This session's run list and skipped count, the same objects for the whole session (the export button's
    callable reads them from another thread, where ``st.session_state`` is not available)."""
    return st.session_state.setdefault(LOG_KEY, []), st.session_state.setdefault(SKIPPED_KEY, {"n": 0})


def record_run(model: Any, experiment: str, fn: Any, request: Any, fn_kwargs: dict) -> None:
    """Add a run to this session's log (once per distinct request). Never fails the page."""
    try:
        runs, skipped = _log()
        run = make_run(model, experiment, fn, request, fn_kwargs)
        if run is not None and run in runs:
            return
        if run is None or sum(len(s) for _, s in run.fields) > MAX_LITERAL or len(runs) >= MAX_RUNS:
            skipped["n"] += 1
        else:
            runs.append(run)
    except Exception:  # noqa: BLE001 - the log is a convenience, the page's result is what matters
        log.exception("recording the %s run for the notebook export failed", experiment)


# -- the notebook ---------------------------------------------------------------------------------
def md_text(text: str) -> str:
    """User text for a markdown cell: Markdown and HTML escaped, on one line."""
    from ui.errors import md_escape

    return md_escape(text).replace("\r", "").replace("\n", " ↵ ")


SETUP = '''import plotly.express as px
import torch

from lens_core import HookedTransformer

PLOTTED = ("normalized", "loss_per_token", "induction", "logit_diff", "scores", "curve_normalized", "patterns",
           "loss_change")


def show(result, title):
    """A plot of the result's main tensor: a bar chart (1-D) or a heatmap (2-D; the first slice of more)."""
    tensors = {name: value for name, value in vars(result).items()
               if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1}
    tensors.update({name: torch.tensor(value, dtype=torch.float32) for name, value in vars(result).items()
                    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, (int, float)) for v in value)
                    and name not in tensors})
    name = next((n for n in PLOTTED if n in tensors), next(iter(tensors), None))
    if name is None:
        print(result)
        return
    value = tensors[name].detach().float().cpu()
    while value.dim() > 2:
        value = value[0]
    if value.dim() == 1:
        fig = px.bar(y=value.numpy(), title=f"{title}: {name}")
    else:
        fig = px.imshow(value.numpy(), title=f"{title}: {name}", color_continuous_scale="RdBu", aspect="auto")
    fig.show()
'''


def new_markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def new_code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}


def build_notebook(runs: list[Run], skipped: int = 0) -> dict:
    """The notebook (nbformat 4.5 JSON, as a dict: the app needs no notebook library) that reruns ``runs`` in order;
    ``results[i]`` is run ``i + 1``'s result."""
    cells = [new_markdown_cell(
        "# Circuit Explorer investigation\n\n"
        f"Exported {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: the {len(runs)} experiment runs of "
        "this session, in the order the app first ran them, with `lens_core` (offline: the models load from the same "
        "names or paths). `results[i]` holds run *i + 1*'s result."
        + (f"\n\n{skipped} run(s) could not be written as cells (too large, or not a `lens_core` experiment) and are left "
           "out." if skipped else ""))]
    models = list(dict.fromkeys((r.model_name, r.dtype) for r in runs))
    names = {m: ("model" if i == 0 else f"model_{i + 1}") for i, m in enumerate(models)}
    load = [SETUP, ""]
    for (name, dtype), var in names.items():
        load.append(f"{var} = HookedTransformer.from_pretrained({name!r}, dtype={dtype!r})")
    if any("transcoders" in r.kwargs for r in runs):
        load.insert(1, "from lens_core.features import load_transcoders\n")
    load.append("results = []")
    cells.append(new_code_cell("\n".join(load)))
    for i, run in enumerate(runs, start=1):
        var = names[(run.model_name, run.dtype)]
        about = f"## {i}. `{run.experiment}` on `{md_text(run.model_name)}`"
        if run.prompt is not None:
            about += f"\n\nPrompt: {md_text(run.prompt)}"
        cells.append(new_markdown_cell(about))
        args = "".join(f"    {name}={source},\n" for name, source in run.fields)
        extra = "".join(f", {k}=load_transcoders({var})" for k in run.kwargs)
        cells.append(new_code_cell(
            f"from {run.module} import {run.request_class}, {run.function}\n\n"
            f"request = {run.request_class}(\n{args})\n"
            f"result = {run.function}({var}, request{extra})\n"
            f"results.append(result)\n"
            f"show(result, {f'{i}. {run.experiment}'!r})"))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}}}


def sidebar_button(where=None) -> None:
    """The sidebar's "Export notebook" button. The notebook is built when clicked, from this session's log as it is
    then (the log object is captured here, so the runs this page adds after the button is drawn are in it)."""
    where = where or st.sidebar
    runs, skipped = _log()
    where.download_button("Export notebook", data=lambda: json.dumps(build_notebook(list(runs), skipped["n"]), indent=1),
                          file_name="circuit_explorer_investigation.ipynb", mime="application/x-ipynb+json",
                          key="export_notebook", on_click="ignore", icon=":material/download:",
                          help="A Jupyter notebook that reruns every experiment this session ran, in order, with "
                               "lens_core (the model loaded once, a plot per run).")
