"""The attribution graph as a chart: node and edge tables for ``ui.graph_chart.layered_graph`` laid out by
``ui.graph_layout`` (columns per position sized by what they hold, staggered labels), and the figure."""

from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go

from lens_core.experiments.graphs.graph_json import node_ids
from ui.graph_chart import layered_graph
from ui.graph_layout import LINE_PX, place_labels, spread_row, spread_x

KIND_COLORS = {"feature": "rgb(76, 120, 168)", "error": "rgb(190, 190, 190)", "embedding": "rgb(114, 183, 178)",
               "logit": "rgb(245, 133, 24)"}
SUPERNODE_COLORS = ["rgb(228, 26, 28)", "rgb(152, 78, 163)", "rgb(77, 175, 74)", "rgb(255, 127, 0)", "rgb(166, 86, 40)",
                    "rgb(247, 129, 191)"]
SELECTED_COLOR = "rgb(25, 25, 25)"
LABEL_BASE_PX = 18.0  # a staggered label's first line sits this far above its node's centre
MAX_LABEL_LINES = 3


def _rows(result) -> list[int]:
    """The chart row of each node: embeddings 0, layer l at l + 1, logits on top."""
    top = result.n_layers + 1
    return [{"embedding": 0, "logit": top}.get(kind, layer + 1) for kind, layer in zip(result.node_kind, result.node_layer)]


def graph_tables(result, labels: list[str], supernodes: list[list[str]], selected: frozenset = frozenset(),
                 tokens: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[float]]:
    """(nodes, edges, centre x of each position's column). Nodes: x spread over the width by position
    (``ui.graph_layout.spread_x``, the most influential first in a cell), y = chart row; size by influence;
    selected nodes dark, supernode members in their group's colour; the token and target labels staggered so
    they do not overlap (cut short, the full text in the hover). ``tokens``: the prompt's tokens as shown."""
    ids = node_ids(result)
    tokens = tokens if tokens is not None else list(result.str_tokens)
    influence = result.node_influence.tolist()
    top = max([v for v, k in zip(influence, result.node_kind) if k in ("feature", "error")] or [1.0]) or 1.0
    group_of = {member: gi for gi, g in enumerate(supernodes) for member in g[1:]}
    rows_of = _rows(result)
    n_positions = len(result.str_tokens)
    x, centres = spread_x(rows_of, result.node_pos, n_positions, order=[-v for v in influence])

    # Drawn text: the token on each embedding, the target on each logit; staggered per row.
    text = [""] * len(ids)
    shift = [float("nan")] * len(ids)
    for kind in ("embedding", "logit"):
        members = [i for i, k in enumerate(result.node_kind) if k == kind]
        full = [tokens[result.node_pos[i]] if kind == "embedding" else labels[i].removeprefix("logit ") for i in members]
        if kind == "logit":  # the targets: their own row, as wide as their labels need
            for i, xi in zip(members, spread_row(full, float(n_positions))):
                x[i] = xi
        drawn, lines = place_labels(full, [x[i] for i in members], float(n_positions), max_lines=MAX_LABEL_LINES)
        for i, t, line in zip(members, drawn, lines):
            text[i], shift[i] = t, LABEL_BASE_PX + LINE_PX * line

    rows = []
    for i, node_id in enumerate(ids):
        kind, layer, pos = result.node_kind[i], result.node_layer[i], result.node_pos[i]
        if kind == "logit":
            size = 10 + 20 * math.sqrt(float(result.node_activation[i]))
        elif kind == "embedding":
            size = 12
        else:
            size = 6 + 20 * math.sqrt(max(influence[i], 0.0) / top)
        group = group_of.get(node_id)
        color = SUPERNODE_COLORS[group % len(SUPERNODE_COLORS)] if group is not None else KIND_COLORS[kind]
        if node_id in selected:
            color = SELECTED_COLOR
        details = [f"{kind}, position {pos} ({html.escape(repr(tokens[pos]))})", f"influence {influence[i]:.3g}"]
        if kind == "feature":
            details.append(f"activation {float(result.node_activation[i]):.3g}, input {float(result.node_input[i]):.3g}")
        elif kind == "logit":
            details.append(f"probability {float(result.node_activation[i]):.3g}")
        if group is not None:
            details.append(f"supernode {html.escape(supernodes[group][0])}")
        rows.append({"id": node_id, "x": x[i], "y": rows_of[i], "label": labels[i], "text": text[i],
                     "text_shift": shift[i], "hover": "<br>".join(details), "size": size, "color": color,
                     "kind": kind, "layer": layer, "pos": pos, "feature": result.node_feature[i],
                     "influence": influence[i], "activation": float(result.node_activation[i])})
    nodes = pd.DataFrame(rows)
    targets, sources = result.adjacency.nonzero(as_tuple=True)
    edges = pd.DataFrame({"source": [ids[s] for s in sources.tolist()], "target": [ids[t] for t in targets.tolist()],
                          "weight": [float(result.adjacency[t, s]) for t, s in zip(targets.tolist(), sources.tolist())]})
    return nodes, edges, centres


def graph_figure(result, nodes: pd.DataFrame, edges: pd.DataFrame, centres: list[float],
                 tokens: list[str] | None = None, height: int = 640) -> go.Figure:
    """The chart: positions' ticks at their columns' centres, the x range fixed to the layout's width (the label
    placement assumes it), room above the logit row for its staggered labels."""
    tokens = tokens if tokens is not None else list(result.str_tokens)
    ticks_x = [(c, f"{p}: {t!r}") for p, (c, t) in enumerate(zip(centres, tokens))]
    ticks_y = [(0, "embed")] + [(l + 1, f"L{l}") for l in range(result.n_layers)] + [(result.n_layers + 1, "logits")]
    fig = layered_graph(nodes, edges, title="Attribution graph", x_title="token position", y_title="layer",
                        x_ticks=ticks_x, y_ticks=ticks_y, weight_name="edge weight", height=height, max_width=4.0)
    shifts = nodes.loc[nodes["kind"] == "logit", "text_shift"] if len(nodes) else pd.Series(dtype=float)
    top_px = float(shifts.max()) + LINE_PX if len(shifts) else 0.0
    fig.update_layout(xaxis={"range": [0.0, float(len(tokens))]},
                      yaxis={"range": [-0.5, result.n_layers + 1.5]},
                      margin={"l": 10, "r": 10, "t": 50 + max(0.0, top_px - 0.5 * height / (result.n_layers + 3)), "b": 10})
    return fig
