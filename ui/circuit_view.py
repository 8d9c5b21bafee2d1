"""Figures and tables for the circuit-discovery page: the circuit as a layered graph, the faithfulness curve.

Layout of the graph (drawn with :func:`ui.graph_chart.layered_graph`): the embeddings at the
bottom, the logits at the top, layer ``l``'s heads across at height ``l`` and its MLP to
their right, half a layer up (it reads the heads' output). A head's query, key and value
inputs are small "port" nodes just below it, so a K-composition edge visibly ends at the key.

Signs: an edge's EAP score (``lens_core.experiments.edge_circuits.edges``) estimates how the logit
difference (answer − wrong answer) moves when that edge alone carries the corrupted value. A
negative score is an edge whose clean value raises the logit difference: it *helps the answer*
(blue); a positive one *hurts the answer* (red). :data:`SIGN_CAPTION` says it under the chart.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import torch

from lens_core.experiments.edge_circuits.circuit_graph import edge_table
from ui.graph_chart import layered_graph

KIND_COLORS = {"embed": "rgb(120, 120, 120)", "head": "rgb(255, 187, 120)", "mlp": "rgb(152, 223, 138)",
               "logits": "rgb(197, 176, 213)", "port": "rgb(255, 255, 255)"}
PORT_DX = {"q": -0.28, "k": 0.0, "v": 0.28}
HELPS, HURTS = "helps the answer", "hurts the answer"
SIGN_CAPTION = ("Blue edges help the answer, red edges hurt it. An edge's score estimates the change of the logit "
                "difference (answer − wrong answer) if that edge alone carried the corrupted value: a negative score "
                "means the clean edge raises the answer's logit difference (it helps), a positive one that it lowers it.")


def effect(score: float) -> str:
    """What an edge of this EAP score does to the answer (see the module docstring)."""
    return HELPS if score < 0 else HURTS if score > 0 else "no effect"


def _sender_place(label: str, n_layers: int, n_heads: int) -> tuple[float, float, str]:
    if label == "embed":
        return (n_heads - 1) / 2, -1.0, "embed"
    if label.startswith("MLP"):
        return n_heads + 0.6, int(label[3:]) + 0.45, "mlp"
    layer, head = label[1:].split("H")
    return float(head), float(layer), "head"


def circuit_graph_figure(result, mask: torch.Tensor, n_heads: int, n_layers: int, title: str = "") -> tuple[go.Figure, pd.DataFrame]:
    """(figure, edge table) of the circuit ``mask`` of an ``EdgeAttributionResult``."""
    rows = edge_table(result, mask)
    nodes: dict[str, dict] = {}
    weight: dict[str, float] = {}

    def add(node_id: str, x: float, y: float, kind: str, label: str, size: float, hover: str = "") -> None:
        if node_id not in nodes:
            nodes[node_id] = {"id": node_id, "x": x, "y": y, "label": label, "size": size, "color": KIND_COLORS[kind],
                              "hover": hover}

    add("embed", *_sender_place("embed", n_layers, n_heads), label="embed", size=18)
    add("logits", (n_heads - 1) / 2, float(n_layers), "logits", "logits", 18)
    edges = []
    for row in rows:
        sender, receiver = row["sender"], row["receiver"]
        x, y, kind = _sender_place(sender, n_layers, n_heads)
        add(sender, x, y, kind, sender, 16)
        weight[sender] = weight.get(sender, 0.0) + abs(row["score"])
        if receiver == "logits":
            target = "logits"
        elif receiver.endswith(".in"):
            target = receiver[:-3]
            add(target, *_sender_place(target, n_layers, n_heads), label=target, size=16)
        else:
            owners = [result.senders[s] for s in result.receiver_owners[row["receiver_index"]]]
            places = [_sender_place(o, n_layers, n_heads) for o in owners]
            for owner, place in zip(owners, places):
                add(owner, *place, label=owner, size=16)
            port = receiver.rsplit(".", 1)[1]
            px = sum(p[0] for p in places) / len(places) + PORT_DX[port]
            name = {"q": "query", "k": "key", "v": "value"}[port]
            add(receiver, px, places[0][1] - 0.22, "port", port, 8,
                hover=html.escape(f"{name} input of {', '.join(owners)}"))
            target = receiver
        edges.append({"source": sender, "target": target, "weight": row["score"], "id": f"{sender}->{receiver}",
                      "sign": -1 if row["score"] > 0 else 1,
                      "hover": html.escape(f"edge {sender} → {receiver}")})
    for node_id, total in weight.items():
        nodes[node_id]["hover"] = f"Σ|score| of its circuit edges: {total:.4g}"
    fig = layered_graph(
        pd.DataFrame(list(nodes.values())), edges, title=title, weight_name="score", sign_names=(HELPS, HURTS),
        y_title="layer", y_ticks=[(-1, "embed")] + [(l, f"L{l}") for l in range(n_layers)] + [(n_layers, "logits")],
        x_title="head", x_ticks=[(h, f"H{h}") for h in range(n_heads)] + [(n_heads + 0.6, "MLP")],
        height=max(420, 150 * (n_layers + 2)),
    )
    span = result.clean_metric - result.corrupted_metric
    table = pd.DataFrame([{
        "sender": r["sender"], "receiver": r["receiver"], "effect": effect(r["score"]), "score": r["score"],
        "score / (clean − corrupted)": r["score"] / span if abs(span) > 1e-9 else float("nan"),
    } for r in rows], columns=["sender", "receiver", "effect", "score", "score / (clean − corrupted)"])
    return fig, table


def faithfulness_figure(result) -> go.Figure:
    """Normalized metric (exact) against the number of edges kept, with the clean and corrupted baselines."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=result.curve_edges, y=result.curve_normalized, mode="lines+markers", name="circuit (top edges)",
        customdata=list(zip(result.curve_top_n, result.curve_metric)),
        hovertemplate="%{x} edges (from the top %{customdata[0]})<br>normalized %{y:.3f}<br>logit diff %{customdata[1]:.4g}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(x=[int(result.circuit.sum())], y=[result.circuit_normalized], mode="markers",
                             marker={"size": 13, "symbol": "star", "color": "crimson"}, name="selected circuit",
                             hovertemplate="selected: %{x} edges<br>normalized %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dash", line_color="rgb(33, 102, 172)",
                  annotation_text=f"clean ({result.clean_metric:.3g})", annotation_position="bottom right")
    base = "corrupted" if result.ablation == "corrupted" else "mean-ablated"
    fig.add_hline(y=0.0, line_dash="dash", line_color="rgb(178, 24, 43)",
                  annotation_text=f"{base}, no edge kept ({result.ablated_metric:.3g})", annotation_position="top right")
    fig.update_layout(title="Faithfulness: the circuit alone, measured exactly", xaxis={"title": "edges kept", "rangemode": "tozero"},
                      yaxis={"title": f"normalized logit difference (clean = 1, {base} = 0)"},
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, height=380)
    return fig
