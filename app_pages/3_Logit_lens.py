"""Logit lens: the target token's probability (or rank) read off the residual stream at every layer and position."""

import pandas as pd
import streamlit as st
import torch

from lens_core.experiments.views.logit_lens import LN_MODES, LogitLensRequest, logit_lens
from ui import charts, state
from ui.errors import guard
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.widgets import answer_token_input, app_context, next_token_guesses, preset_picker

VALUES = ("probability", "rank")

st.title("Logit lens")
ctx = app_context()
preset_picker("logit_lens", {"prompt": "prompt", "answer": "answer"}, ctx)
model, tokens = ctx.require_prompt()
ids = [int(t) for t in tokens[0].tolist()]

cols = st.columns([2, 2, 2, 3])
guess = next_token_guesses(model, tokens, 1) if "answer" not in st.session_state else []
answer_text, answer_id = answer_token_input("Target token", key="answer", model=model,
                                            default=guess[0] if guess else "", where=cols[0])
value = state.radio("Show", VALUES, key="lens_value", where=cols[1], horizontal=True,
                    help="Rank 1 is the most likely token; ranks beyond the top-k are drawn as k + 1.")
ln_mode = state.radio("Final norm", LN_MODES, key="ln_mode", where=cols[2], horizontal=True,
                      help="recomputed: each layer normalised by its own scale (the usual logit lens). "
                           "frozen: every layer divided by the scale the model used on its final residual.")
top_k = state.int_slider("Top tokens on hover (k)", 1, 20, key="top_k", default=5, where=cols[3])
if answer_id is None:
    st.stop()

request = LogitLensRequest(tokens=tuple(ids), targets=(answer_id,), top_k=top_k, ln_mode=ln_mode)
with guard("computing the logit lens"):
    result = run_experiment(model, "logit_lens", logit_lens, request, device=ctx.device)

probs = result.target_probs[..., 0].float()  # [layer, pos]
top_probs = result.top_probs.float()  # [layer, pos, k]
k = top_probs.shape[-1]
# Exact rank while the target is within the top k (its probability is one of the top-k values); k + 1 beyond.
in_top_k = probs >= top_probs[..., -1]
ranks = torch.where(in_top_k, 1 + (top_probs > probs[..., None]).sum(-1), torch.full_like(probs, k + 1, dtype=torch.long))

n_rows, n_pos = probs.shape
hover = [
    ["<br>top: " + ", ".join(f"{charts.token_label(t)} {float(p):.3f}" for t, p in zip(result.top_tokens[l][p], top_probs[l, p]))
     + ("" if bool(in_top_k[l, p]) else f"<br>rank &gt; {k}")
     for p in range(n_pos)]
    for l in range(n_rows)
]
target = charts.visible(result.target_labels[0])
if value == "probability":
    fig = charts.heatmap(probs, result.str_tokens, result.layer_labels, title=f"P({target}) by layer and position",
                         x_title="position", y_title="layer (residual entering it)", value_name="probability", hover=hover)
    fig.data[0].update(zmin=0.0, zmax=1.0)
else:
    fig = charts.heatmap(ranks, result.str_tokens, result.layer_labels, title=f"Rank of {target} by layer and position",
                         x_title="position", y_title="layer (residual entering it)", value_name="rank",
                         hover=hover, colorscale="Viridis_r")
st.plotly_chart(fig, key="logit_lens_chart")
st.caption(f"Row Lℓ reads the residual stream entering block ℓ; the last row (final) is the model's own output. "
           f"Hover a cell for the top {k} tokens there. Final norm: {ln_mode}.")

table = pd.DataFrame([
    {"layer": result.layer_labels[l], "position": p, "token": charts.visible(result.str_tokens[p]),
     "target": target, "probability": float(probs[l, p]), "logit": float(result.target_logits[l, p, 0]),
     "rank": int(ranks[l, p]) if bool(in_top_k[l, p]) else None,
     "top tokens": " ".join(charts.visible(t) for t in result.top_tokens[l][p])}
    for l in range(n_rows) for p in range(n_pos)
])
snippet = experiment_snippet(ctx, logit_lens, request, "print(result.layer_labels, result.str_tokens)",
                             "print(result.target_probs[..., 0])  # [layer, pos]", prompt=ctx.prompt,
                             targets=(answer_text,))
export_bar("logit_lens", df=table, fig=fig, snippet=snippet)
