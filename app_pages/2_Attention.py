"""Attention: one head's pattern with token labels on both axes, and an overview grid of all heads."""

import pandas as pd
import streamlit as st
import torch

from lens_core.experiments.views.attention import AttentionRequest, attention_patterns
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors
from ui import charts, state
from ui.errors import guard
from ui.export import export_bar, python_literal
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker

GRID_MAX_HEADS = 48  # above this many heads the overview shows the selected layer only

st.title("Attention patterns")
ctx = app_context()


def with_induction_head(preset: dict) -> dict:
    """An induction preset also selects the head the induction detector scores highest on its prompt."""
    if ctx.model is None or "induction" not in str(preset.get("name", "")).lower():
        return preset
    with guard("finding the induction head"):
        ids = tuple(int(t) for t in ctx.model.to_tokens(preset["prompt"])[0].tolist())
        scores = run_experiment(ctx.model, "head_detectors", head_detectors, DetectorRequest(tokens=ids),
                                device=ctx.device).induction
    if torch.isnan(scores).all():
        return preset
    best = int(torch.nan_to_num(scores, nan=-1.0).flatten().argmax())
    return {**preset, "layer": best // scores.shape[1], "head": best % scores.shape[1]}


preset_picker("attention", {"prompt": "prompt", "layer": "layer", "head": "head"}, ctx, derive=with_induction_head)
model, tokens = ctx.require_prompt()
cfg = model.cfg

with guard("computing the attention patterns"):
    result = run_experiment(model, "attention_patterns", attention_patterns,
                            AttentionRequest(tokens=tuple(int(t) for t in tokens[0].tolist())), device=ctx.device)

cols = st.columns(2)
layer = state.int_slider("Layer", 0, cfg.n_layers - 1, key="layer", default=0, where=cols[0])
head = state.int_slider("Head", 0, cfg.n_heads - 1, key="head", default=0, where=cols[1])

pattern = result.patterns[layer, head]
str_toks = result.str_tokens
fig = charts.attention_pattern(pattern, str_toks, title=f"L{layer}H{head}: where each destination token attends")
st.plotly_chart(fig, key="pattern_chart")
st.caption("Rows are destination (query) positions, columns source (key) positions; each row sums to 1.")

n = len(str_toks)
long = pd.DataFrame(
    [
        {"layer": layer, "head": head, "destination position": q, "destination token": charts.visible(str_toks[q]),
         "source position": k, "source token": charts.visible(str_toks[k]), "weight": float(pattern[q, k])}
        for q in range(n) for k in range(q + 1)
    ]
)
snippet = f"""from lens_core import HookedTransformer

model = HookedTransformer.from_pretrained({python_literal(ctx.model_name)}, dtype={python_literal(ctx.dtype)})
tokens = model.to_tokens({python_literal(ctx.prompt)})
logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
pattern = cache["pattern", {layer}][0, {head}]  # [query_pos, key_pos]
print(model.to_str_tokens(tokens[0]))
print(pattern)
"""
export_bar(f"attention_L{layer}H{head}", df=long, fig=fig, snippet=snippet)

st.subheader("All heads")
if cfg.n_layers * cfg.n_heads <= GRID_MAX_HEADS:
    grid = charts.heads_grid(result.patterns, str_toks)
    st.caption("Rows are layers, columns heads; hover for destination, source and weight.")
else:
    grid = charts.heads_grid(result.patterns, str_toks, layers=[layer])
    st.caption(f"This model has {cfg.n_layers * cfg.n_heads} heads: showing layer {layer}'s; move the layer slider for others.")
st.plotly_chart(grid, key="heads_grid")
