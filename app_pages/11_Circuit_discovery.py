"""Circuit discovery: score every edge with EAP / EAP-IG, keep the top ones, check the circuit alone by exact patching."""

import json

import pandas as pd
import streamlit as st

from lens_core.experiments.interventions.attribution import AttributionPatchingRequest, attribution_patching, correlation
from lens_core.experiments.edge_circuits.circuit_graph import circuit_json, select_circuit
from lens_core.experiments.edge_circuits.edges import METHODS, EdgeAttributionRequest, build_graph, edge_attribution
from lens_core.experiments.edge_circuits.faithfulness import ABLATIONS, FaithfulnessRequest, circuit_faithfulness
from lens_core.experiments.interventions.patching import SWEEPS, PatchingRequest, activation_patching
from ui import charts, state
from ui.circuit_view import SIGN_CAPTION, circuit_graph_figure, faithfulness_figure
from ui.errors import UserInputError, guard
from ui.contrast_inputs import contrast_inputs, corrupted_ids_or_stop, preset_with_corrupted
from ui.export import experiment_snippet, export_bar
from ui.graph_chart import selected_ids
from ui.links import edge_link, head_links
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker

METHOD_NAMES = {"eap_ig": "EAP-IG (integrated gradients)", "eap": "EAP (one gradient)"}
ABLATION_NAMES = {"corrupted": "their sender's corrupted output", "mean": "the mean corrupted output over the prompts"}
TASKS = {"pair": "The clean / corrupted prompts", "induction": "Repeated random sequences (induction)"}

st.title("Circuit discovery")
ctx = app_context()
model = ctx.require_model()
cfg = model.cfg
graph = build_graph(cfg)
total_edges = int(graph.allowed.sum())
st.caption(f"Every path through the residual stream is an edge: from the embeddings, a head's output or an MLP's output "
           f"to a later head's query, key or value input, a later MLP's input, or the logits ({total_edges} edges in "
           f"this model). EAP scores every edge from two forward passes and one backward pass; EAP-IG averages the "
           f"gradient along the straight line from the corrupted to the clean input. The circuit is then run alone, "
           f"exactly: every edge outside it carries its sender's corrupted output.")




# -- what to explain ---------------------------------------------------------------------
cols = st.columns([3, 2, 2])
task = state.radio("Prompts", list(TASKS), key="task", default="pair", where=cols[0], format_func=TASKS.get,
                   help="Scores are averaged over the prompt pairs (all of the same length).")
method = state.radio("Method", list(METHODS), key="method", default="eap_ig", where=cols[1], format_func=METHOD_NAMES.get)
ig_steps = 5
if method == "eap_ig":
    ig_steps = state.int_input("Integration steps", 1, 32, key="ig_steps", default=5, where=cols[2])

pair: dict = {}
if task == "pair":
    preset_picker("circuit_discovery",
                  {"prompt": "prompt", "corrupted_prompt": "corrupted", "answer": "answer", "wrong_answer": "wrong_answer"},
                  ctx, extra_pages=("activation_patching", "attention"), derive=preset_with_corrupted(model))
    model, clean_tokens = ctx.require_prompt()
    clean_ids = [int(t) for t in clean_tokens[0].tolist()]
    corrupted_text, corrupted_tokens, answer_text, answer, wrong_text, wrong = contrast_inputs(ctx, model, clean_tokens)
    corrupted_ids = corrupted_ids_or_stop(clean_ids, corrupted_tokens, answer, wrong_text, wrong)
    with guard("checking the prompts"):
        if corrupted_ids == clean_ids:
            raise UserInputError("The corrupted prompt is the clean prompt: every edge carries the same value in both, so "
                                 "every score is 0 and there is no circuit to find. Edit it, or derive one.")
    pair = dict(clean_tokens=tuple(clean_ids), corrupted_tokens=tuple(corrupted_ids), answer=answer, wrong_answer=wrong)
    readable = dict(clean_prompt=ctx.prompt, corrupted_prompt=corrupted_text, answer=answer_text, wrong_answer=wrong_text or None)
else:
    cols = st.columns(3)
    max_len = max(3, cfg.n_ctx // 2)
    pair = dict(task="induction",
                task_size=state.int_input("Sequences", 1, 64, key="task_size", default=32, where=cols[0]),
                task_seq_len=state.int_input("Tokens per half", 3, min(max_len, 64), key="task_seq_len", default=8, where=cols[1]),
                task_seed=state.int_input("Seed", 0, 10**6, key="task_seed", default=0, where=cols[2]))
    st.caption("Each pair: clean = BOS, a random sequence A, then A again without its last token (the answer: what "
               "induction predicts); corrupted = the same with the earlier copy of the last token replaced by another "
               "random token, so there is nothing to follow. Wrong answer: that replacing token.")
    readable = {}

cols = st.columns([2, 3])
select_by = state.radio("Circuit", ["size", "threshold"], key="select_by", default="size", where=cols[0], horizontal=True,
                        format_func={"size": "by size (edges)", "threshold": "by score threshold"}.get)
if select_by == "size":
    n_edges = state.int_input(f"Edges in the circuit (1 to {total_edges})", 1, total_edges, key="n_edges",
                              default=max(1, total_edges // 10), where=cols[1])
    threshold = None
else:
    n_edges = 0
    threshold_text = state.text_input("Keep edges with |score| at least", key="threshold", default="0.5", where=cols[1])
    with guard("reading the threshold"):
        try:
            threshold = float(threshold_text)
        except ValueError:
            raise UserInputError(f"The score threshold must be a number, got {threshold_text!r}.") from None
        if not threshold >= 0 or threshold == float("inf"):
            raise UserInputError(f"The score threshold must be a finite number ≥ 0, got {threshold_text!r}.")

# -- scores --------------------------------------------------------------------------------
score_request = EdgeAttributionRequest(method=method, ig_steps=ig_steps, **pair)
with guard("scoring the edges"):
    scores = run_experiment(model, "edge_attribution", edge_attribution, score_request, device=ctx.device)
with guard("selecting the circuit"):
    if threshold is not None:
        mask = select_circuit(scores, threshold=threshold)
        if not bool(mask.any()):
            raise UserInputError(f"No path from the embeddings to the logits has every edge at |score| ≥ {threshold:g}: "
                                 f"lower the threshold (the largest |score| is {float(scores.scores.abs().max()):.4g}).")
    else:
        mask = select_circuit(scores, n_edges=n_edges)
kept = int(mask.sum())
st.info(f"The circuit has **{kept}** of {total_edges} edges ({100 * kept / total_edges:.1f}%): the top-scored edges, "
        f"minus those on no path from the embeddings to the logits.", icon=":material/account_tree:")

ablation = state.radio("Edges outside the circuit carry", list(ABLATIONS), key="ablation", default="corrupted",
                       horizontal=True, format_func=ABLATION_NAMES.get,
                       help="mean: each sender's corrupted output averaged over the task's prompts, per position "
                            "(with one prompt pair this is the corrupted output itself).")
request = FaithfulnessRequest(method=method, ig_steps=ig_steps, n_edges=n_edges, threshold=threshold, ablation=ablation,
                              **pair)
progress_bar = st.progress(0.0, text="Running the circuits exactly…")
with guard("running the circuit exactly"):
    faith = run_experiment(model, "circuit_faithfulness", circuit_faithfulness, request, device=ctx.device,
                           progress=lambda done, total: progress_bar.progress(min(1.0, done / max(total, 1))))
progress_bar.empty()

cols = st.columns(4)
cols[0].metric("Clean logit difference", f"{faith.clean_metric:.3f}")
if ablation == "corrupted":
    cols[1].metric("Corrupted logit difference", f"{faith.corrupted_metric:.3f}")
else:
    cols[1].metric("Mean-ablated logit difference", f"{faith.ablated_metric:.3f}",
                   help=f"No edge kept, every edge carrying its mean corrupted value (corrupted: {faith.corrupted_metric:.3f}).")
cols[2].metric("Circuit alone (exact)", f"{faith.circuit_metric:.3f}")
cols[3].metric("Recovered (normalized)", f"{faith.circuit_normalized:.1%}")
if abs(faith.clean_metric - faith.ablated_metric) < 1e-6:
    st.warning("Clean and corrupted (or mean-ablated) give the same metric: the normalized value is undefined, and every score is "
               "about 0.", icon=":material/warning:")

# -- the graph ------------------------------------------------------------------------------
st.subheader("The circuit")
fig, table = circuit_graph_figure(scores, mask, cfg.n_heads, cfg.n_layers,
                                  title=f"{METHOD_NAMES[method]}: {kept} edges (blue: helps the answer, red: hurts it)")
event = st.plotly_chart(fig, key="circuit_graph", on_select="rerun", selection_mode=("points",))
st.caption(SIGN_CAPTION + " Small white dots are a head's query (left), key (middle) and value (right) inputs. "
           "Click a head to open it on another page.")
picked, _ = selected_ids(event)
heads = [p for p in picked if p.startswith("L") and "H" in p and "." not in p]
if heads:
    layer, head = (int(v) for v in heads[0][1:].split("H"))
    head_links(st, ctx, layer, head, caption=f"{heads[0]} selected; open it in:",
               **({"answer": answer_text, "wrong_answer": wrong_text} if task == "pair" else {}))
snippet = experiment_snippet(ctx, circuit_faithfulness, request, "print(result.circuit_normalized, result.curve_normalized)",
                             **readable)
export_bar("circuit_graph", df=table, fig=fig, snippet=snippet)
graph_json = json.dumps(circuit_json(scores, mask, ctx.model_name, faith.circuit_metric, faith.circuit_normalized), indent=1)
st.download_button("Graph (JSON)", data=graph_json.encode("utf-8"), file_name="circuit_graph.json", mime="application/json",
                   key="json_circuit_graph", on_click="ignore", icon=":material/download:",
                   help="Schema circuit-explorer/circuit-graph@1: see lens_core/experiments/edge_circuits/circuit_graph.py.")

st.subheader("Faithfulness curve")
curve_fig = faithfulness_figure(faith)
st.plotly_chart(curve_fig, key="faithfulness_curve")
curve_table = pd.DataFrame({"top edges taken": faith.curve_top_n, "edges kept": faith.curve_edges,
                            "logit difference": faith.curve_metric, "normalized": faith.curve_normalized})
export_bar("faithfulness_curve", df=curve_table, fig=curve_fig, snippet=snippet)

st.subheader("Edges of the circuit")
st.dataframe(table, hide_index=True, key="edge_table")
if len(table):
    names = [f"{a} → {b}" for a, b in zip(table["sender"], table["receiver"])]
    chosen = st.selectbox("Per-position scores of an edge", names, key="edge_by_pos",
                          help="An edge's score is the sum over positions of these.")
    row = table.iloc[names.index(chosen)]
    s, r = scores.senders.index(row["sender"]), scores.receivers.index(row["receiver"])
    by_pos = scores.scores_by_pos[s, r]
    pos_fig = charts.bar(by_pos, scores.str_tokens, title=f"{chosen}: score by position"
                         + (f" (first of {scores.n_prompts} prompts shown as labels)" if scores.n_prompts > 1 else ""),
                         x_title="position", y_title="score", labels_are_tokens=True)
    st.plotly_chart(pos_fig, key="edge_by_pos_chart")
    if task == "pair":
        edge_link(st, ctx, row["sender"], row["receiver"],
                  contrast={"corrupted": corrupted_text, "answer": answer_text, "wrong_answer": wrong_text})

# -- attribution patching beside exact activation patching -----------------------------------------
if task == "pair":
    st.subheader("Attribution patching beside exact activation patching")
    sweep = state.selectbox("Sweep", list(SWEEPS), key="ap_sweep", default="head_out_all_pos")
    approx_request = AttributionPatchingRequest(sweep=sweep, **pair)
    exact_request = PatchingRequest(sweep=sweep, **pair)
    with guard("running attribution and activation patching"):
        approx = run_experiment(model, "attribution_patching", attribution_patching, approx_request, device=ctx.device)
        exact = run_experiment(model, "activation_patching", activation_patching, exact_request, device=ctx.device)
    r = correlation(exact, approx)
    st.metric("Correlation (Pearson, over cells)", "undefined" if r != r else f"{r:.3f}")
    cols = st.columns(2)
    for col, (name, result) in zip(cols, (("Attribution patching (gradient)", approx), ("Activation patching (exact)", exact))):
        z = result.normalized if not bool(result.normalized.isnan().all()) else result.logit_diff
        if result.axes == ["layer", "head", "pos"]:
            z = z.reshape(-1, z.shape[-1])
            y = [f"{l}{h}" for l in result.axis_labels[0] for h in result.axis_labels[1]]
            x, x_title = result.clean_str_tokens, "position"
        else:
            y = result.axis_labels[0]
            x, x_title = (result.clean_str_tokens, "position") if result.axes[1] == "pos" else (result.axis_labels[1], "head")
        heat = charts.heatmap(z, x, y, title=name, x_title=x_title, y_title="layer", value_name="normalized", zmid=0.0,
                              labels_are_tokens=x_title == "position")
        with col:
            st.plotly_chart(heat, key=f"ap_{'approx' if result is approx else 'exact'}")
            export_bar(f"ap_{'approx' if result is approx else 'exact'}", df=None, fig=heat, where=col,
                       snippet=experiment_snippet(ctx, attribution_patching if result is approx else activation_patching,
                                                  approx_request if result is approx else exact_request,
                                                  "print(result.normalized)", **readable))
    st.caption("Attribution patching estimates every cell from one backward pass: (clean − corrupted activation) · "
               "gradient at the corrupted run. It drifts where attention or the final softmax saturate.")
