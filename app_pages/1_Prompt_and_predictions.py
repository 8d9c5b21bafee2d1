"""Prompt & predictions: how the prompt tokenizes, what the model predicts at every position, loss per token."""

import html

import pandas as pd
import streamlit as st

from lens_core.experiments.views.predictions import PredictionsRequest, predictions
from ui import charts, state
from ui.errors import guard
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker

st.title("Prompt & predictions")
ctx = app_context()
preset_picker("predictions", {"prompt": "prompt"}, ctx)
model, tokens = ctx.require_prompt()
ids = [int(t) for t in tokens[0].tolist()]

# -- tokens, with their boundaries --------------------------------------------------
st.subheader(f"Tokens ({len(ids)})")
str_toks = list(model.to_str_tokens(tokens[0]))
chips = "".join(
    f'<span class="tok" title="id {i}"><span class="piece">{html.escape(charts.visible(t))}</span><sub>{i}</sub></span>'
    for t, i in zip(str_toks, ids)
)
st.html(
    "<style>.tok{display:inline-block;border:1px solid #9aa6c4;border-radius:4px;padding:1px 4px;margin:2px;"
    "font-family:monospace;white-space:pre;background:#f3f5fb}.tok sub{color:#6b7385;margin-left:3px}</style>"
    f'<div class="token-chips">{chips}</div>'
)
st.caption("␣ marks a space, ↵ a newline; the small number is the token id.")

# -- predictions ---------------------------------------------------------------------
top_k = state.int_slider("Top-k predictions per position", 1, 20, key="top_k", default=5)
with guard("computing the predictions"):
    request = PredictionsRequest(tokens=tuple(ids), top_k=top_k)
    result = run_experiment(model, "predictions", predictions, request, device=ctx.device)

n = len(ids)
loss = result.loss_per_token.float().tolist()
rows = []
for pos in range(n):
    row = {
        "position": pos,
        "token": charts.visible(result.str_tokens[pos]),
        "token id": ids[pos],
        "next token": charts.visible(result.str_tokens[pos + 1]) if pos + 1 < n else "",
        "loss on next token": loss[pos] if pos + 1 < n else None,
    }
    for k in range(result.top_probs.shape[1]):
        row[f"top {k + 1}"] = charts.visible(result.top_tokens[pos][k])
        row[f"p{k + 1}"] = float(result.top_probs[pos, k])
    rows.append(row)
table = pd.DataFrame(rows)

st.subheader("Loss per token")
if n > 1:
    labels = [f"{p}: {charts.visible(result.str_tokens[p])} → {charts.visible(result.str_tokens[p + 1])}" for p in range(n - 1)]
    fig = charts.bar(loss, labels, title="Loss predicting each next token", x_title="position: token → next token",
                     y_title="loss (nats)")
    st.plotly_chart(fig, key="loss_chart")
    st.caption(f"Mean loss {sum(loss) / len(loss):.3f} nats over {n - 1} predictions.")
else:
    fig = None
    st.info("A one-token prompt has no next token to score.")

st.subheader(f"Top-{top_k} predictions at every position")
st.dataframe(table, hide_index=True, key="predictions_table",
             column_config={f"p{k + 1}": st.column_config.NumberColumn(format="%.3f") for k in range(top_k)})

snippet = experiment_snippet(ctx, predictions, request, "print(result.str_tokens)",
                             "print(result.top_tokens[-1], result.top_probs[-1])", "print(result.loss_per_token)",
                             prompt=ctx.prompt)
export_bar("predictions", df=table, fig=fig, snippet=snippet)
