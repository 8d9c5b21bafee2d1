"""A feature's or neuron's full dashboard (precomputed over the held-out split) drawn with Streamlit.

No model math: the numbers come from ``lens_core.features.dashboards.Dashboards`` and from the
``unit_activation`` experiment. Token text is escaped by ``ui.token_html``.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lens_core.experiments._common import str_tokens
from lens_core.features.per_layer import dictionary_layers, layer_width
from ui.charts import visible
from ui.token_html import token_strip

EDIT_RE = re.compile(r"^\s*L?(\d+)\s*[#:]\s*(\d+)\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*$")


def parse_edits(text: str) -> tuple[list[tuple[int, int, float]], list[str]]:
    """``"L1#42=5, 2#7=0"`` -> ([(1, 42, 5.0), (2, 7, 0.0)], [pieces that did not parse])."""
    edits, bad = [], []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        match = EDIT_RE.match(piece)
        if match:
            edits.append((int(match.group(1)), int(match.group(2)), float(match.group(3))))
        else:
            bad.append(piece)
    return edits, bad


def check_edits(edits: list[tuple[int, int, float]], tset: Any) -> tuple[list[tuple[int, int, float]], list[str]]:
    """The edits the dictionary can make (a transcoder set or a cross-layer transcoder), and a plain sentence for each
    one it cannot (no features on that layer, a feature index past the layer's width)."""
    layers = dictionary_layers(tset)
    usable, problems = [], []
    for layer, feature, value in edits:
        if layer not in layers:
            problems.append(f"L{layer}#{feature}: this dictionary has no features on layer {layer} "
                            f"(it has features on layers {', '.join(map(str, layers))}).")
        elif not 0 <= feature < layer_width(tset, layer):
            problems.append(f"L{layer}#{feature}: layer {layer} of this dictionary has features 0 to {layer_width(tset, layer) - 1}.")
        else:
            usable.append((layer, feature, value))
    return usable, problems


def _texts(model: Any, ids: Sequence[int]) -> list[str]:
    return [visible(t) for t in str_tokens(model, list(ids))] if ids else []


def histogram(unit: dict, title: str) -> go.Figure:
    n = len(unit["hist"])
    width = unit["hist_hi"] / n
    centres = [width * (i + 0.5) for i in range(n)]
    fig = go.Figure(go.Bar(x=centres, y=unit["hist"], width=width * 0.95,
                           hovertemplate="activation ≈ %{x:.3f}<br>positions: %{y}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="activation (positive only)", yaxis_title="held-out positions",
                      height=260, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def unit_dashboard(model: Any, unit: dict, key: str, where=st) -> pd.DataFrame:
    """Density, histogram, logit effects, input tokens and top contexts of one unit; returns the contexts table."""
    label = f"L{unit['layer']} {unit['kind']} {unit['index']}"
    cols = where.columns(3)
    cols[0].metric("Fires on (held-out positions)", f"{100 * unit['density']:.3f}%")
    cols[1].metric("Largest held-out activation", f"{unit['hist_hi']:.3f}")
    cols[2].metric("Top contexts", len(unit["top"]))
    left, right = where.columns([3, 2])
    left.plotly_chart(histogram(unit, f"{label}: activation histogram"), key=f"{key}_hist")
    up, down = unit["logits_up"], unit["logits_down"]
    right.markdown("**Direct logit effects** (output direction · W_U)")
    right.dataframe(pd.DataFrame({"promotes": _texts(model, [t for t, _ in up]), "+logit": [round(v, 3) for _, v in up],
                                  "suppresses": _texts(model, [t for t, _ in down]),
                                  "−logit": [round(v, 3) for _, v in down]}), hide_index=True, key=f"{key}_logits")
    if unit.get("inputs"):
        inputs = unit["inputs"]
        where.markdown("**Top input tokens** (current token at the positions where it fires, by total activation)")
        where.dataframe(pd.DataFrame({"token": _texts(model, [i["token"] for i in inputs]),
                                      "total activation": [round(i["sum"], 2) for i in inputs],
                                      "times it fires": [i["count"] for i in inputs]}), hide_index=True,
                        key=f"{key}_inputs")
    where.markdown(f"**Top {len(unit['top'])} held-out contexts** (colour: this unit's activation on each token; "
                   "outlined: the maximum)")
    rows = []
    scale = max((abs(e["value"]) for e in unit["top"]), default=1.0) or 1.0
    before = unit.get("context_before", 16)
    for rank, example in enumerate(unit["top"]):
        keep = [i for i, t in enumerate(example["tokens"]) if t >= 0]
        texts = _texts(model, [example["tokens"][i] for i in keep])
        acts = [example["acts"][i] for i in keep]
        titles = [f"{t!r}: {a:.3f}" for t, a in zip(texts, acts)]
        highlight = keep.index(before) if before in keep else None
        where.markdown(f'<div style="display:flex;gap:8px"><code>{example["value"]:.3f}</code>'
                       f'{token_strip(texts, acts, scale, highlight=highlight, titles=titles)}</div>',
                       unsafe_allow_html=True)
        rows.append({"rank": rank + 1, "activation": example["value"], "window": example["window"],
                     "position": example["pos"], "context": "".join(texts),
                     "activations": " ".join(f"{a:.3f}" for a in acts)})
    return pd.DataFrame(rows)


def prompt_strip(str_toks: Sequence[str], acts: Sequence[float], scale: Optional[float] = None) -> str:
    """The prompt coloured by one unit's activation (hover: the value)."""
    scale = scale or max((abs(a) for a in acts), default=1.0) or 1.0
    texts = [visible(t) for t in str_toks]
    titles = [f"{i}: {t!r}: {a:.3f}" for i, (t, a) in enumerate(zip(texts, acts))]
    return token_strip(texts, list(acts), scale, titles=titles)
