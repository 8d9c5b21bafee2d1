"""Export a view: its data as CSV, its figure as a self-contained HTML file, and a Python snippet.

PNG comes from the camera button in plotly's own chart toolbar (client-side, offline).
The HTML embeds plotly.js (``include_plotlyjs=True``) so the file opens without a
network; it is built only when the button is clicked (a callable ``data``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "export"


def figure_html(fig: go.Figure) -> str:
    return fig.to_html(include_plotlyjs=True, full_html=True)


def export_bar(name: str, df: pd.DataFrame | None = None, fig: go.Figure | None = None, snippet: str | None = None,
               where=st) -> None:
    """One row of export controls under a chart. ``name`` must be unique on the page."""
    slug = _slug(name)
    cols = where.columns(3)
    if df is not None:
        cols[0].download_button("Data (CSV)", data=df.to_csv(index=False).encode("utf-8"), file_name=f"{slug}.csv",
                                mime="text/csv", key=f"csv_{slug}", on_click="ignore", icon=":material/download:")
    if fig is not None:
        cols[1].download_button("Figure (HTML)", data=lambda: figure_html(fig), file_name=f"{slug}.html",
                                mime="text/html", key=f"html_{slug}", on_click="ignore", icon=":material/download:")
    if snippet is not None:
        with where.expander("Copy as Python"):
            st.code(snippet, language="python")


def python_literal(value) -> str:
    """A safe Python literal for user text in a snippet (repr never breaks out of the string)."""
    return repr(value)


def stable_module(*objects: Any) -> str:
    """``lens_core.experiments`` when it exports every object (the import path that never moves),
    else the objects' own module."""
    import lens_core.experiments as experiments

    if all(getattr(experiments, obj.__name__, None) is obj for obj in objects):
        return experiments.__name__
    return objects[0].__module__


def experiment_snippet(ctx: Any, fn: Callable, request: Any, *prints: str, **readable: Any) -> str:
    """A "copy as Python" script that rebuilds ``request`` and runs ``fn`` on it with lens_core.

    Only fields that differ from the request's defaults are written. ``readable`` replaces
    fields by what the user typed: ``prompt="..."`` stands for the ``tokens`` ids (and
    ``clean_prompt`` for ``clean_tokens``...), ``answer=" Paris"`` for a token id. ``prints``
    are the lines that show the result (``print(result.heads)``). When the page uses a feature dictionary other
    than the bundled transcoders (``ctx.dictionary``), the script loads it with ``load_dictionary`` and passes it.
    """
    values = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)
              if getattr(request, f.name) != f.default}
    for name, value in readable.items():
        if name.endswith("prompt"):
            values.pop(name[: -len("prompt")] + "tokens", None)
        values[name] = value
    chosen = getattr(ctx, "dictionary", None)  # the page's feature dictionary (ui.attribution_graph_view)
    load, call = "", ""
    if "transcoders" in {f.name for f in dataclasses.fields(request)} and chosen is not None and chosen.other:
        values.pop("transcoders", None)  # a cache key; the script loads the dictionary itself
        load = (f"from lens_core.features import load_dictionary\n\n"
                f"transcoders = load_dictionary({python_literal(chosen.entry.source)}, model)  # {chosen.kind}\n")
        call = ", transcoders=transcoders"
    args = "".join(f"    {name}={python_literal(value)},\n" for name, value in values.items())
    request_cls = type(request).__name__
    lines = "".join(f"{line}\n" for line in prints)
    return f"""from lens_core import HookedTransformer
from {stable_module(fn, type(request))} import {request_cls}, {fn.__name__}

model = HookedTransformer.from_pretrained({python_literal(ctx.model_name)}, dtype={python_literal(ctx.dtype)})
{load}request = {request_cls}(
{args})
result = {fn.__name__}(model, request{call})
{lines}"""
