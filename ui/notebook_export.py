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
import logging
from typing import Any

import streamlit as st

LOG_KEY = "_notebook_log"  # session_state: list of run entries, in the order first run
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


def record_run(model: Any, experiment: str, fn: Any, request: Any, fn_kwargs: dict) -> None:
    """Add a run to this session's log (once per distinct request). Never fails the page."""
    try:
        runs = st.session_state.setdefault(LOG_KEY, [])
        run = make_run(model, experiment, fn, request, fn_kwargs)
        if run is None:
            st.session_state[LOG_KEY + "_skipped"] = st.session_state.get(LOG_KEY + "_skipped", 0) + 1
        elif run not in runs and sum(len(s) for _, s in run.fields) <= MAX_LITERAL and len(runs) < MAX_RUNS:
            runs.append(run)
        elif run not in runs:
            st.session_state[LOG_KEY + "_skipped"] = st.session_state.get(LOG_KEY + "_skipped", 0) + 1
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

PLOTTED = ("normalized", "loss_per_token", "induction", "logit_diff", "scores", "patterns", "loss_change")


def show(result, title):
    """A plot of the result's main tensor: a bar chart (1-D) or a heatmap (2-D; the first slice of more)."""
    tensors = {name: value for name, value in vars(result).items()
               if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1}
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


def build_notebook(runs: list[Run], skipped: int = 0) -> Any:
    """The notebook (``nbformat`` v4) that reruns ``runs`` in order; ``results[i]`` is run ``i + 1``'s result."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

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
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    nbformat.validate(notebook)
    return notebook


def notebook_text() -> str:
    import nbformat

    runs = list(st.session_state.get(LOG_KEY, []))
    return nbformat.writes(build_notebook(runs, int(st.session_state.get(LOG_KEY + "_skipped", 0))))


def sidebar_button(where=None) -> None:
    """The sidebar's "Export notebook" button (the notebook is built when clicked)."""
    where = where or st.sidebar
    where.download_button("Export notebook", data=notebook_text, file_name="circuit_explorer_investigation.ipynb",
                          mime="application/x-ipynb+json", key="export_notebook", on_click="ignore",
                          icon=":material/download:",
                          help="A Jupyter notebook that reruns every experiment this session ran, in order, with "
                               "lens_core (the model loaded once, a plot per run).")
