"""Compare prompts: two prompts side by side on predictions, attention, logit lens and DLA, with their differences."""

import pandas as pd
import streamlit as st

from lens_core.experiments.views.attention import AttentionRequest, attention_patterns
from lens_core.experiments.views.dla import DLARequest, direct_logit_attribution
from lens_core.experiments.views.logit_lens import LogitLensRequest, logit_lens
from lens_core.experiments.views.predictions import PredictionsRequest, predictions
from ui import charts, state
from ui.errors import guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.widgets import answer_pair_inputs, app_context, derive_corrupted_prompt, prompt_input

TOP_K = 10

st.title("Compare prompts")
st.caption("Prompt A is the sidebar's prompt; prompt B is below. Every view runs on both, with the difference "
           "A − B where the two share an axis (layers, heads, components).")
ctx = app_context()
model, tokens_a = ctx.require_prompt()
cfg = model.cfg
# B opens on a contrast of A (one repeated word changed, as the patching pages derive it): the same prompt
# twice would make every difference 0.
fresh = "prompt_b" not in st.query_params and "prompt_b" not in st.session_state
derived_b = derive_corrupted_prompt(model, ctx.prompt) if fresh else None
text_b, tokens_b = prompt_input("Prompt B", key="prompt_b", model=model, default=derived_b or ctx.prompt,
                                settings=ctx.settings)
if text_b == ctx.prompt:
    st.info("Prompt B is prompt A: every difference below is 0. Change a word of B to compare.", icon=":material/info:")
answer_text, answer, wrong_text, wrong = answer_pair_inputs(model, tokens_a)
cols = st.columns(2)
layer = state.int_input("Layer (attention)", 0, cfg.n_layers - 1, key="layer", default=0, where=cols[0])
head = state.int_input("Head (attention)", 0, cfg.n_heads - 1, key="head", default=0, where=cols[1])
if tokens_b is None or answer is None or (wrong_text and wrong is None):
    st.stop()
ids = {"A": tuple(int(t) for t in tokens_a[0].tolist()), "B": tuple(int(t) for t in tokens_b[0].tolist())}
texts = {"A": ctx.prompt, "B": text_b}
if ids["A"] == ids["B"]:
    st.info("The two prompts are the same tokens: every difference below is 0. Edit prompt B.", icon=":material/info:")


def run(name, fn, request_of):
    out = {}
    for side in "AB":
        with guard(f"running {name} on prompt {side}"):
            out[side] = run_experiment(model, name, fn, request_of(ids[side]), device=ctx.device)
    return out


def snippet(fn, request_of, *prints, **readable):
    return "\n".join(f"# prompt {side}\n" + experiment_snippet(ctx, fn, request_of(ids[side]), *prints,
                                                                prompt=texts[side], **readable) for side in "AB")


answer_label = charts.visible(answer_text) + (f" − {charts.visible(wrong_text)}" if wrong is not None else "")

# -- predictions ------------------------------------------------------------------------------
st.subheader("Next-token predictions at the last position")
pred_req = lambda t: PredictionsRequest(tokens=t, top_k=TOP_K)  # noqa: E731
preds = run("predictions", predictions, pred_req)
cols = st.columns(2)
frames = {}
for col, side in zip(cols, "AB"):
    r = preds[side]
    frames[side] = pd.DataFrame({"token": [charts.visible(t) for t in r.top_tokens[-1]],
                                 "probability": r.top_probs[-1].tolist()})
    col.markdown(f"**Prompt {side}** ({len(ids[side])} tokens): mean loss "
                 f"{float(r.loss_per_token.mean()) if len(r.loss_per_token) else float('nan'):.3f}")
    col.dataframe(frames[side], hide_index=True, key=f"pred_{side}")
table = pd.concat({f"prompt {s}": frames[s] for s in "AB"}, axis=1)
table.columns = [" ".join(c) for c in table.columns]
export_bar("compare predictions", df=table, snippet=snippet(predictions, pred_req, "print(result.top_tokens[-1])"))

# -- DLA ---------------------------------------------------------------------------------------
st.subheader(f"Direct logit attribution of {md_escape(answer_label)} at the last position")
dla_req = lambda t: DLARequest(tokens=t, answer=answer, wrong_answer=wrong)  # noqa: E731
dla = run("dla", direct_logit_attribution, dla_req)
m = st.columns(3)
m[0].metric("Prompt A: metric", f"{dla['A'].logit_diff:.3f}")
m[1].metric("Prompt B: metric", f"{dla['B'].logit_diff:.3f}")
m[2].metric("A − B", f"{dla['A'].logit_diff - dla['B'].logit_diff:+.3f}")
heads_diff = dla["A"].heads - dla["B"].heads
cols = st.columns(3)
layer_labels, head_labels = dla["A"].layer_labels, [f"H{h}" for h in range(cfg.n_heads)]
dla_figs = {}
for col, (name, z) in zip(cols, [("A", dla["A"].heads), ("B", dla["B"].heads), ("A − B", heads_diff)]):
    dla_figs[name] = charts.heatmap(z, head_labels, layer_labels, title=f"Heads: {name}", x_title="head", y_title="layer",
                                    value_name="logit attribution", zmid=0.0, labels_are_tokens=False)
    col.plotly_chart(dla_figs[name], key=f"dla_heads_{name}")
components = dla["A"].component_labels
comp_fig = charts.lines({"A": dla["A"].decomposed, "B": dla["B"].decomposed,
                         "A − B": dla["A"].decomposed - dla["B"].decomposed}, components,
                        title="By component", x_title="component", y_title="logit attribution")
st.plotly_chart(comp_fig, key="dla_components")
dla_table = pd.DataFrame({"head": dla["A"].head_labels, "A": dla["A"].heads.reshape(-1).tolist(),
                          "B": dla["B"].heads.reshape(-1).tolist(), "A - B": heads_diff.reshape(-1).tolist()})
export_bar("compare dla", df=dla_table, fig=dla_figs["A − B"],
           snippet=snippet(direct_logit_attribution, dla_req, "print(result.heads)", answer=answer_text,
                           wrong_answer=wrong_text or None))

# -- logit lens --------------------------------------------------------------------------------
st.subheader(f"Logit lens: probability of {md_escape(charts.visible(answer_text))} at the last position, by layer")
lens_req = lambda t: LogitLensRequest(tokens=t, targets=(answer,))  # noqa: E731
lens = run("logit_lens", logit_lens, lens_req)
series = {side: lens[side].target_probs[:, -1, 0] for side in "AB"}
series["A − B"] = series["A"] - series["B"]
lens_fig = charts.lines(series, lens["A"].layer_labels, title="P(answer) from the residual entering each layer",
                        x_title="layer", y_title="probability")
st.plotly_chart(lens_fig, key="lens")
lens_table = pd.DataFrame({"layer": lens["A"].layer_labels, **{k: v.tolist() for k, v in series.items()}})
export_bar("compare logit lens", df=lens_table, fig=lens_fig,
           snippet=snippet(logit_lens, lens_req, "print(result.target_probs[:, -1])", targets=(answer_text,)))

# -- attention -----------------------------------------------------------------------------------
st.subheader(f"Attention of L{layer}H{head}")
att_req = lambda t: AttentionRequest(tokens=t)  # noqa: E731
att = run("attention_patterns", attention_patterns, att_req)
cols = st.columns(2)
att_figs = {}
for col, side in zip(cols, "AB"):
    att_figs[side] = charts.attention_pattern(att[side].patterns[layer, head], att[side].str_tokens,
                                              title=f"Prompt {side}: L{layer}H{head}")
    col.plotly_chart(att_figs[side], key=f"attention_{side}")
if len(ids["A"]) == len(ids["B"]):
    diff = att["A"].patterns[layer, head] - att["B"].patterns[layer, head]
    labels = [f"{a} | {b}" for a, b in zip(att["A"].str_tokens, att["B"].str_tokens)]
    diff_fig = charts.heatmap(diff, labels, labels, title=f"L{layer}H{head}: A − B (same positions)",
                              x_title="source (key)", y_title="destination (query)", value_name="Δ weight", zmid=0.0)
    st.plotly_chart(diff_fig, key="attention_diff")
else:
    diff_fig = None
    st.caption(f"The prompts have different lengths ({len(ids['A'])} and {len(ids['B'])} tokens): no position-wise "
               "difference of the patterns.")
export_bar("compare attention", fig=diff_fig or att_figs["A"],
           snippet=snippet(attention_patterns, att_req, f"print(result.patterns[{layer}, {head}])"))
