"""Plotly figures with token labels. No math here beyond arranging arrays.

Token strings are user-controlled (they come from the prompt), and plotly renders
tick labels and hover text as a small subset of HTML, so every token string is
passed through :func:`token_label` (visible whitespace, then ``html.escape``)
before it reaches a figure. Axes are numeric with ``ticktext`` so that repeated
tokens keep separate rows/columns (categorical axes would merge them).
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """Make whitespace visible so token boundaries are obvious (' the' -> '␣the')."""
    return "".join(_VISIBLE.get(ch, ch) for ch in token)


def token_label(token: str) -> str:
    """A token as safe plotly text: whitespace made visible, then HTML-escaped."""
    return html.escape(visible(token), quote=True)


def position_labels(str_tokens: Sequence[str]) -> list[str]:
    return [f"{i}: {token_label(t)}" for i, t in enumerate(str_tokens)]


def _as_array(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def heatmap(
    z,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    value_name: str = "value",
    hover: Sequence[Sequence[str]] | None = None,
    zmid: float | None = None,
    colorscale: str | None = None,
    labels_are_tokens: bool = True,
    height: int | None = None,
) -> go.Figure:
    """Heatmap ``z[y, x]``. Labels are escaped here when ``labels_are_tokens``; ``hover`` must already be safe."""
    z = _as_array(z)
    esc = token_label if labels_are_tokens else (lambda s: html.escape(str(s)))
    xs, ys = [esc(s) for s in x_labels], [esc(s) for s in y_labels]
    custom = np.empty(z.shape + (3,), dtype=object)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            custom[i, j] = (ys[i], xs[j], hover[i][j] if hover is not None else "")
    diverging = zmid is not None
    scale = {}
    if diverging:  # symmetric around zmid and covering the data: the strongest cell of either sign reaches the end
        finite = np.abs(z[np.isfinite(z)] - zmid)
        reach = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        scale = {"zmin": zmid - reach, "zmax": zmid + reach}
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])), customdata=custom, **scale,
        colorscale=colorscale or ("RdBu" if diverging else "Viridis"), zmid=zmid,
        reversescale=diverging, colorbar={"title": {"text": html.escape(value_name)}},
        hovertemplate=(f"{html.escape(y_title) or 'row'}: %{{customdata[0]}}<br>{html.escape(x_title) or 'column'}: %{{customdata[1]}}"
                       f"<br>{html.escape(value_name)}: %{{z:.4g}}%{{customdata[2]}}<extra></extra>"),
    ))
    fig.update_layout(
        title=html.escape(title), height=height or max(320, min(900, 60 + 22 * z.shape[0])),
        xaxis={"title": html.escape(x_title), "tickmode": "array", "tickvals": list(range(len(xs))), "ticktext": xs,
               "automargin": True},  # token tick labels get the room they need, not cut off
        yaxis={"title": html.escape(y_title), "tickmode": "array", "tickvals": list(range(len(ys))), "ticktext": ys,
               "autorange": "reversed", "automargin": True},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def bar(values, labels: Sequence[str], *, title: str = "", x_title: str = "", y_title: str = "",
        labels_are_tokens: bool = False, hover: Sequence[str] | None = None) -> go.Figure:
    values = _as_array(values)
    esc = token_label if labels_are_tokens else (lambda s: html.escape(str(s)))
    names = [esc(s) for s in labels]
    fig = go.Figure(go.Bar(
        x=list(range(len(values))), y=values, customdata=[[n, hover[i] if hover else ""] for i, n in enumerate(names)],
        hovertemplate="%{customdata[0]}: %{y:.4g}%{customdata[1]}<extra></extra>",
    ))
    fig.update_layout(
        title=html.escape(title),
        xaxis={"title": html.escape(x_title), "tickmode": "array", "tickvals": list(range(len(names))), "ticktext": names},
        yaxis={"title": html.escape(y_title)}, margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def attention_pattern(pattern, str_tokens: Sequence[str], *, title: str = "") -> go.Figure:
    """One head's pattern ``[query_pos, key_pos]``; hover names destination, source and weight."""
    pattern = _as_array(pattern).copy()
    n = pattern.shape[0]
    pattern[np.triu(np.ones((n, n), dtype=bool), k=1)] = np.nan  # causal: keys after the query are not attended
    fig = heatmap(pattern, str_tokens, str_tokens, title=title, x_title="source (key)", y_title="destination (query)",
                  value_name="weight", colorscale="Blues")
    fig.data[0].update(zmin=0.0, zmax=1.0)
    return fig


def heads_grid(patterns, str_tokens: Sequence[str], *, layers: Sequence[int] | None = None) -> go.Figure:
    """Small multiples of every head's pattern: rows are layers, columns heads. ``patterns[L, H, q, k]``."""
    patterns = _as_array(patterns)
    n_layers, n_heads, n, _ = patterns.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    labels = position_labels(str_tokens)
    fig = make_subplots(rows=len(layers), cols=n_heads, horizontal_spacing=0.01, vertical_spacing=0.02,
                        row_titles=[f"L{l}" for l in layers], column_titles=[f"H{h}" for h in range(n_heads)])
    mask = np.triu(np.ones((n, n), dtype=bool), k=1)
    custom = np.empty((n, n, 2), dtype=object)
    for i in range(n):
        for j in range(n):
            custom[i, j] = (labels[i], labels[j])
    for r, layer in enumerate(layers):
        for h in range(n_heads):
            z = patterns[layer, h].copy()
            z[mask] = np.nan
            fig.add_trace(go.Heatmap(
                z=z, customdata=custom, zmin=0.0, zmax=1.0, colorscale="Blues", showscale=False,
                hovertemplate=f"L{layer}H{h}<br>destination %{{customdata[0]}}<br>source %{{customdata[1]}}<br>weight %{{z:.3f}}<extra></extra>",
            ), row=r + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(height=max(300, 90 * len(layers) + 60), margin={"l": 10, "r": 30, "t": 40, "b": 10})
    return fig


# Lines that stay apart in colour (a colour-blind-safe pair first: blue, orange), dash and marker, so two
# overlapping series (before / after) read as two.
LINE_STYLES = ({"color": "#1f77b4", "dash": "solid"}, {"color": "#ff7f0e", "dash": "dash"},
               {"color": "#2ca02c", "dash": "dot"}, {"color": "#9467bd", "dash": "dashdot"})
LINE_MARKERS = ("circle", "diamond", "square", "triangle-up")


def lines(series: dict, labels: Sequence[str], *, title: str = "", x_title: str = "", y_title: str = "",
          labels_are_tokens: bool = False) -> go.Figure:
    """One line per entry of ``series`` (name -> values) over the same x labels (e.g. before vs after)."""
    esc = token_label if labels_are_tokens else (lambda s: html.escape(str(s)))
    names = [esc(s) for s in labels]
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Scatter(
            x=list(range(len(names))), y=_as_array(values), mode="lines+markers", name=html.escape(str(name)),
            line=LINE_STYLES[i % len(LINE_STYLES)], marker={"symbol": LINE_MARKERS[i % len(LINE_MARKERS)]},
            customdata=names, hovertemplate=f"{html.escape(str(name))}<br>%{{customdata}}: %{{y:.4g}}<extra></extra>",
        ))
    fig.update_layout(
        title=html.escape(title),
        xaxis={"title": html.escape(x_title), "tickmode": "array", "tickvals": list(range(len(names))), "ticktext": names},
        yaxis={"title": html.escape(y_title)}, margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def log_count_axis(max_count: float) -> dict:
    """A log axis for counts with readable ticks: 1, 10, 100, 1,000, ... up to the first power of ten at or above
    ``max_count`` (plotly's own log ticks crowd in 2s and 5s between the decades)."""
    top = max(0, math.ceil(math.log10(max(float(max_count), 1.0))))
    values = [10 ** k for k in range(top + 1)]
    return {"type": "log", "tickmode": "array", "tickvals": values, "ticktext": [f"{v:,}" for v in values],
            "range": [math.log10(0.7), top + 0.1], "minor": {"showgrid": False}}


def count_histogram(values, *, bins: int = 120, title: str = "", x_title: str = "", y_title: str = "count",
                    log_counts: bool = True, height: int = 300) -> go.Figure:
    """A histogram of ``values`` in ``bins`` equal bins (fixed here, so the counts, and the log axis's ticks, are
    known); counts on a log axis with ticks at the powers of ten when ``log_counts``."""
    values = _as_array(values).ravel()
    values = values[np.isfinite(values)]
    fig = go.Figure()
    counts = np.zeros(0)
    if values.size:
        low, high = float(values.min()), float(values.max())
        if high <= low:
            high = low + 1.0
        counts, _ = np.histogram(values, bins=bins, range=(low, high))
        size = (high - low) / bins
        fig.add_trace(go.Histogram(x=values, xbins={"start": low, "end": high, "size": size},
                                   marker_color="#888", hovertemplate="%{x}<br>%{y:,} " + html.escape(y_title)
                                   + "<extra></extra>"))
    yaxis = log_count_axis(counts.max() if counts.size else 1) if log_counts else {}
    yaxis["title"] = html.escape(y_title)
    fig.update_layout(title=html.escape(title), xaxis={"title": html.escape(x_title)}, yaxis=yaxis, height=height,
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
