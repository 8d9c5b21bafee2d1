"""A layered graph as a Plotly figure: nodes at given (x, y), edges coloured by sign and sized by |weight|.

Generic on purpose: the circuit-discovery page puts heads/MLPs at (head index, layer),
the attribution-graph page puts features at (token position, layer). Both pass plain
tables (pandas DataFrames or lists of dicts):

nodes: ``id`` (str, unique), ``x``, ``y`` (numbers), ``label`` (short text drawn on the
    node, escaped here), and optionally ``hover`` (already-safe HTML shown on hover),
    ``size`` (marker diameter in px), ``color`` (a number, mapped through ``node_colorscale``,
    or a CSS colour string), ``text`` (drawn on the node instead of the label, escaped here),
    ``text_shift`` (px, signed: draw the text that far above (+) or below (-) the node instead,
    as an annotation whose hover is the label; NaN: on the node. ``ui.graph_layout`` staggers
    crowded labels this way).
edges: ``source``, ``target`` (node ids), ``weight`` (signed number), and optionally
    ``hover`` (already-safe HTML), ``id`` (str, returned by selection; default
    ``"source->target"``) and ``sign`` (+1 or -1: which colour the edge gets, when the colour
    should say something else than the weight's sign, e.g. "helps the answer" for a negative
    score; default: the weight's sign).

Colours: ``sign`` +1 is blue, -1 red; ``sign_names`` (e.g. ``("helps the answer", "hurts the
answer")``) names them in the legend and in the hover of each edge of non-zero weight.

Why Plotly: it is already the app's chart library (every page exports its figures as
self-contained HTML through ``ui.export``), ``st.plotly_chart(on_select="rerun")`` returns
clicked/lasso-selected points to Python, so a click can open a head on another page
without a custom component, and it draws a few thousand line segments in one WebGL-free
SVG trace per (sign, width bin) without trouble. A dedicated graph component (agraph,
cytoscape) would add a JavaScript dependency, lay nodes out itself (we want layers fixed)
and export nothing.

Plotly draws one width per trace, so edges are binned: ``width_bins`` widths per sign.
Edge hover comes from a marker at each edge's midpoint (lines themselves do not hover).
Selection: node markers carry ``customdata = [kind, id]`` with kind ``"node"``, midpoint
markers ``["edge", id]``; :func:`selected_ids` turns a selection event into those ids. The
figure keeps plotly's default drag mode (zoom): with ``dragmode="select"`` a click selects nothing
in ``st.plotly_chart(on_select="rerun", selection_mode="points")``.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

POSITIVE_COLOR = "rgba(33, 102, 172, {alpha})"  # blue, as the positive end of the app's RdBu heatmaps
NEGATIVE_COLOR = "rgba(178, 24, 43, {alpha})"  # red


def _table(rows: pd.DataFrame | Iterable[Mapping[str, Any]], required: Sequence[str], what: str) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in required if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"{what} need columns {list(required)}; missing {missing}")
    for column in required:
        if column not in df.columns:
            df[column] = pd.Series(dtype=object)
    return df.reset_index(drop=True)


def layered_graph(
    nodes: pd.DataFrame | Iterable[Mapping[str, Any]],
    edges: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_ticks: Sequence[tuple[float, str]] | None = None,
    weight_name: str = "weight",
    width_bins: int = 5,
    max_width: float = 8.0,
    min_width: float = 0.6,
    node_size: float = 14.0,
    node_colorscale: str = "Viridis",
    node_color_name: str = "",
    show_labels: bool = True,
    height: int | None = None,
    sign_names: tuple[str, str] | None = None,
) -> go.Figure:
    """The graph figure. ``x_ticks``/``y_ticks``: (value, text) pairs for the axes (text escaped here);
    ``sign_names``: legend names of the blue (+1) and red (-1) edges (escaped here; no legend if None)."""
    nodes = _table(nodes, ("id", "x", "y", "label"), "nodes")
    edges = _table(edges, ("source", "target", "weight"), "edges")
    if nodes["id"].duplicated().any():
        raise ValueError(f"node ids must be unique; repeated: {nodes['id'][nodes['id'].duplicated()].iloc[0]!r}")
    where = {str(i): (float(x), float(y)) for i, x, y in zip(nodes["id"], nodes["x"], nodes["y"])}
    unknown = [e for e in list(edges["source"]) + list(edges["target"]) if str(e) not in where]
    if unknown:
        raise ValueError(f"an edge names node {unknown[0]!r}, which is not among the nodes")
    labels = {str(i): html.escape(str(l)) for i, l in zip(nodes["id"], nodes["label"])}

    fig = go.Figure()
    weights = edges["weight"].astype(float).to_numpy() if len(edges) else np.zeros(0)
    scale = float(np.abs(weights).max()) if len(weights) else 0.0
    magnitude = np.abs(weights) / scale if scale > 0 else np.zeros_like(weights)
    bins = np.minimum((magnitude * width_bins).astype(int), width_bins - 1)  # 0 .. width_bins-1
    if "sign" in edges and len(edges):
        signs = np.where(edges["sign"].astype(float).to_numpy() < 0, -1, 1)
    else:
        signs = np.where(weights < 0, -1, 1)
    for sign, color in ((1, POSITIVE_COLOR), (-1, NEGATIVE_COLOR)):
        signed = signs == sign
        for b in range(width_bins):
            chosen = np.flatnonzero(signed & (bins == b))
            if not len(chosen):
                continue
            xs: list = []
            ys: list = []
            for i in chosen:
                (x0, y0), (x1, y1) = where[str(edges["source"][i])], where[str(edges["target"][i])]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
            fraction = (b + 1) / width_bins
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                line={"width": min_width + (max_width - min_width) * fraction,
                      "color": color.format(alpha=0.25 + 0.6 * fraction)},
            ))

    if len(edges):
        ids = edges["id"].astype(str).tolist() if "id" in edges else [f"{s}->{t}" for s, t in zip(edges["source"], edges["target"])]
        hovers = edges["hover"].astype(str).tolist() if "hover" in edges else [""] * len(edges)
        mid_x, mid_y, custom, texts = [], [], [], []
        for i in range(len(edges)):
            (x0, y0), (x1, y1) = where[str(edges["source"][i])], where[str(edges["target"][i])]
            mid_x.append((x0 + x1) / 2)
            mid_y.append((y0 + y1) / 2)
            custom.append(["edge", ids[i]])
            name = f"{labels[str(edges['source'][i])]} → {labels[str(edges['target'][i])]}"
            extra = f"<br>{hovers[i]}" if hovers[i] else ""
            meaning = f" ({html.escape(sign_names[0 if signs[i] > 0 else 1])})" if sign_names and weights[i] != 0 else ""
            texts.append(f"{name}<br>{html.escape(weight_name)}: {weights[i]:.4g}{meaning}{extra}")
        fig.add_trace(go.Scatter(
            x=mid_x, y=mid_y, mode="markers", name="edges", showlegend=False, customdata=custom,
            hovertext=texts, hoverinfo="text",
            marker={"size": 7, "symbol": "diamond", "opacity": 0.35,
                    "color": [POSITIVE_COLOR.format(alpha=1) if s > 0 else NEGATIVE_COLOR.format(alpha=1) for s in signs]},
        ))
    if sign_names:
        # Legend entries only (no points): a line of each colour with its meaning.
        for name, color in zip(sign_names, (POSITIVE_COLOR, NEGATIVE_COLOR)):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=html.escape(name), hoverinfo="skip",
                                     showlegend=True, line={"width": 4, "color": color.format(alpha=0.85)}))

    if len(nodes):
        sizes = nodes["size"].astype(float).tolist() if "size" in nodes else node_size
        marker: dict[str, Any] = {"size": sizes, "line": {"width": 1, "color": "rgba(40,40,40,0.8)"}}
        if "color" in nodes:
            colors = nodes["color"].tolist()
            if all(isinstance(c, (int, float, np.number)) for c in colors):
                marker.update(color=colors, colorscale=node_colorscale, showscale=bool(node_color_name),
                              colorbar={"title": {"text": html.escape(node_color_name)}} if node_color_name else None)
            else:
                marker["color"] = [str(c) for c in colors]
        else:
            marker["color"] = "rgb(240, 240, 240)"
        hovers = nodes["hover"].astype(str).tolist() if "hover" in nodes else [""] * len(nodes)
        names = [labels[str(i)] for i in nodes["id"]]
        # Optional ``text``: what is drawn on the node, when it should be shorter than the label (default: label).
        drawn = [html.escape(str(t)) for t in nodes["text"].fillna("")] if "text" in nodes else names
        if "text_shift" in nodes:
            shifts = nodes["text_shift"].astype(float).tolist()
            for i, shift in enumerate(shifts):
                if shift == shift and drawn[i]:  # not NaN
                    fig.add_annotation(x=float(nodes["x"][i]), y=float(nodes["y"][i]), text=drawn[i], showarrow=False,
                                       yshift=shift, font={"size": 10}, hovertext=names[i])
            drawn = [t if s != s else "" for t, s in zip(drawn, shifts)]
        fig.add_trace(go.Scatter(
            x=nodes["x"].astype(float).tolist(), y=nodes["y"].astype(float).tolist(),
            mode="markers+text" if show_labels else "markers", name="nodes", showlegend=False,
            text=drawn, textposition="top center", textfont={"size": 10},
            customdata=[["node", str(i)] for i in nodes["id"]],
            hovertext=[f"<b>{n}</b>" + (f"<br>{h}" if h else "") for n, h in zip(names, hovers)], hoverinfo="text",
            marker=marker,
        ))

    def axis(label: str, ticks):
        spec: dict[str, Any] = {"title": html.escape(label), "zeroline": False, "showgrid": False}
        if ticks is not None:
            spec.update(tickmode="array", tickvals=[t[0] for t in ticks], ticktext=[html.escape(str(t[1])) for t in ticks])
        return spec

    n_rows = nodes["y"].nunique() if len(nodes) else 1
    fig.update_layout(
        title=html.escape(title), height=height or max(360, min(1000, 110 * n_rows + 80)),
        xaxis=axis(x_title, x_ticks), yaxis=axis(y_title, y_ticks), hovermode="closest",
        margin={"l": 10, "r": 10, "t": 50, "b": 10}, plot_bgcolor="white",
        showlegend=bool(sign_names),
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def selected_ids(event: Any) -> tuple[list[str], list[str]]:
    """(node ids, edge ids) picked in a ``st.plotly_chart(..., on_select="rerun")`` event (empty lists if none)."""
    nodes: list[str] = []
    edges: list[str] = []
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None) or []
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, Mapping) else None
        if not custom or len(custom) != 2:
            continue
        (nodes if custom[0] == "node" else edges if custom[0] == "edge" else []).append(str(custom[1]))
    return nodes, edges
