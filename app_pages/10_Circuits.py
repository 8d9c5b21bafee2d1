"""Circuits read from the weights: one head's QK and OV circuits, OV copying scores of all heads, Q/K/V composition."""

import pandas as pd
import streamlit as st
import torch

from lens_core.experiments.views.circuits import CompositionRequest, HeadCircuitsRequest, composition, head_circuits
from ui import charts, state
from ui.errors import guard
from ui.export import experiment_snippet, export_bar, python_literal
from ui.links import head_links
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker

MAX_SOURCE_TOKENS = 50
SOURCES = {"top": "Tokens this head copies most", "prompt": "The prompt's tokens"}
COMPOSITION = {"q": "Q-composition", "k": "K-composition", "v": "V-composition"}

st.title("Circuits")
ctx = app_context()
preset_picker("circuits", {"prompt": "prompt"}, ctx)
model = ctx.require_model()
cfg = model.cfg

# -- inputs ----------------------------------------------------------------------------
cols = st.columns(2)
layer = state.int_slider("Layer", 0, cfg.n_layers - 1, key="layer", default=cfg.n_layers - 1, where=cols[0])
head = state.int_slider("Head", 0, cfg.n_heads - 1, key="head", default=0, where=cols[1])
cols = st.columns(3)
source = state.radio("Source tokens of the full OV circuit", list(SOURCES), key="ov_src", default="top", where=cols[0],
                     format_func=lambda s: SOURCES[s])
n_sources = MAX_SOURCE_TOKENS
if source == "top":
    n_sources = state.int_input("How many source tokens", 1, MAX_SOURCE_TOKENS, key="n_src", default=10, where=cols[1])
top_k = state.int_slider("Top-k output tokens per source", 1, 20, key="top_k", default=5, where=cols[2])

source_ids: tuple = ()
if source == "prompt":
    _, tokens = ctx.require_prompt()
    bos = getattr(model, "bos_token_id", None)
    seen = dict.fromkeys(int(t) for t in tokens[0].tolist() if int(t) != bos)  # unique, in prompt order
    source_ids = tuple(list(seen)[:MAX_SOURCE_TOKENS])
    if not source_ids:
        st.info("The prompt has no tokens besides BOS.", icon=":material/info:")
        st.stop()

request = HeadCircuitsRequest(layer=layer, head=head, source_tokens=source_ids, n_source_tokens=n_sources, top_k=top_k)
with guard("computing the head's circuits"):
    result = run_experiment(model, "head_circuits", head_circuits, request, device=ctx.device)
layers, heads = result.axis_labels
name = f"L{layer}H{head}"

# -- OV copying scores of every head -------------------------------------------------------
st.subheader("OV copying score of every head")
copy_fig = charts.heatmap(result.copying_scores, heads, layers, title="Copying score: Re(Σλ) / Σ|λ| of W_E W_V W_O W_U",
                          x_title="head", y_title="layer", value_name="copying score", zmid=0.0, labels_are_tokens=False)
copy_fig.data[0].update(zmin=-1.0, zmax=1.0)
st.plotly_chart(copy_fig, key="copying_chart")
st.caption("From the eigenvalues λ of each head's full OV circuit (kept factored, rank d_head): "
           "+1 for a head that only copies the tokens it attends to, −1 for one that only suppresses them.")
heads_table = pd.DataFrame([
    {"layer": l, "head": h, "label": f"{layers[l]}{heads[h]}", "copying score": float(result.copying_scores[l, h]),
     "QK norm": float(result.qk_norms[l, h]), "OV norm": float(result.ov_norms[l, h])}
    for l in range(len(layers)) for h in range(len(heads))
])
export_bar("copying_scores", df=heads_table, fig=copy_fig, snippet=f"""from lens_core import HookedTransformer
from lens_core.experiments.views.circuits import ov_copying_scores

model = HookedTransformer.from_pretrained({python_literal(ctx.model_name)}, dtype={python_literal(ctx.dtype)})
print(ov_copying_scores(model))  # [layer, head]
""")

# -- the chosen head -----------------------------------------------------------------------
st.subheader(f"Head {name}")
head_links(st, ctx, layer, head)
cols = st.columns(3)
cols[0].metric("OV copying score", f"{float(result.copying_scores[layer, head]):.3f}")
cols[1].metric("QK circuit norm (Frobenius)", f"{float(result.qk_norms[layer, head]):.3f}")
cols[2].metric("OV circuit norm (Frobenius)", f"{float(result.ov_norms[layer, head]):.3f}")

n_sv = len(result.qk_singular_values)
sv_fig = charts.lines({"QK: W_Q W_Kᵀ": result.qk_singular_values, "OV: W_V W_O": result.ov_singular_values},
                      [f"σ{i + 1}" for i in range(n_sv)], title=f"{name}: singular values of its QK and OV circuits",
                      x_title="singular value", y_title="value")
st.plotly_chart(sv_fig, key="singular_values_chart")
st.caption("Both circuits are d_model × d_model of rank d_head; a fast drop means the head reads/writes few directions.")

st.markdown(f"**Full OV circuit of {name}** (`W_E W_V W_O W_U`): when the head attends to a source token, "
            f"the {top_k} output tokens whose logits it raises most.")
source_ids_out = result.source_token_ids.tolist()
rows = []
for i, src in enumerate(source_ids_out):
    row = {"source token": charts.visible(result.source_labels[i]), "source id": int(src)}
    for k in range(result.top_output_ids.shape[1]):
        row[f"out {k + 1}"] = charts.visible(result.top_output_labels[i][k])
        row[f"logit {k + 1}"] = float(result.top_output_values[i, k])
    row["copies itself"] = int(src) in result.top_output_ids[i].tolist()
    rows.append(row)
ov_table = pd.DataFrame(rows)
st.dataframe(ov_table, hide_index=True, key="full_ov_table",
             column_config={f"logit {k + 1}": st.column_config.NumberColumn(format="%.3f") for k in range(top_k)})
export_bar(f"full_ov_{name}", df=ov_table, fig=sv_fig, snippet=experiment_snippet(
    ctx, head_circuits, request, "print(result.source_labels)", "print(result.top_output_labels, result.top_output_values)",
    "from lens_core.experiments.views.circuits import full_ov_circuit",
    f"full_ov = full_ov_circuit(model, {layer}, {head})  # FactoredMatrix [d_vocab, d_vocab], never dense",
    "print(full_ov.eigenvalues)"))

# -- composition --------------------------------------------------------------------------
st.subheader("Composition between heads")
if cfg.n_layers < 2:
    st.info("Composition needs at least two layers.", icon=":material/info:")
    st.stop()
kind = state.radio("Kind", list(COMPOSITION), key="comp", default="k", horizontal=True, format_func=lambda c: COMPOSITION[c],
                   help="How much a later head's queries (Q), keys (K) or values (V) read what an earlier head writes: "
                        "‖W_A W_B‖ / (‖W_A‖ ‖W_B‖) with W_A the earlier head's OV circuit.")
comp_request = CompositionRequest()
with guard("computing the composition scores"):
    comp = run_experiment(model, "composition", composition, comp_request, device=ctx.device)
scores = getattr(comp, kind)
comp_fig = charts.heatmap(scores, comp.head_labels, comp.head_labels, title=f"{COMPOSITION[kind]} score (writer → reader)",
                          x_title="reader head (later layer)", y_title="writer head (earlier layer)", value_name="score",
                          labels_are_tokens=False, height=max(360, min(900, 80 + 14 * len(comp.head_labels))))
st.plotly_chart(comp_fig, key="composition_chart")
st.caption("Blank cells: the reader is not in a later layer than the writer. "
           "For random matrices the score is about 1/√d_model, a baseline to compare against.")
n = len(comp.head_labels)
comp_table = pd.DataFrame([
    {"writer": comp.head_labels[i], "reader": comp.head_labels[j], f"{kind.upper()}-composition": float(scores[i, j])}
    for i in range(n) for j in range(n) if not torch.isnan(scores[i, j])
])
export_bar(f"composition_{kind}", df=comp_table, fig=comp_fig, snippet=experiment_snippet(
    ctx, composition, comp_request, "print(result.head_labels)",
    f"print(result.{kind})  # [writer head, reader head], NaN unless the reader is in a later layer"))
