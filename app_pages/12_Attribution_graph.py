"""Attribution graph: the model with transcoders instead of MLPs, made linear, drawn as a pruned graph of
features, errors, token embeddings and target logits; supernodes; interventions in the real model."""

import json

import pandas as pd
import streamlit as st

from lens_core.experiments.graphs.attribution_graph import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs.graph_interventions import GraphInterventionRequest, graph_intervention
from lens_core.experiments.graphs.graph_json import graph_json, node_ids
from lens_core.experiments.views.attention import AttentionRequest, attention_patterns
from ui import attribution_graph_view as view
from ui.attribution_graph_chart import graph_figure, graph_tables
from ui import state
from ui.errors import guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.graph_chart import selected_ids
from ui.feature_labels import feature_names
from ui.links import feature_link
from ui.model import run_experiment
from ui.qk_pick import edge_qk_choice
from ui.qk_view import qk_section
from ui.token_names import token_name
from ui.widgets import app_context, optional_token_input, preset_picker

st.title("Attribution graph")
ctx = app_context()
model = ctx.require_model()

chosen = view.require_dictionary(ctx, "No attribution graph for this model", refuse=view.GRAPH_REFUSES)
tset, fingerprint = chosen.dictionary, chosen.fingerprint

preset_picker("attribution_graph", {"prompt": "prompt", "answer": "target"}, ctx)
model, tokens = ctx.require_prompt()
ids = [int(t) for t in tokens[0].tolist()]

# -- inputs -------------------------------------------------------------------------------
cols = st.columns(4)
target_text, target = optional_token_input("Target token (empty: the top predictions)", key="target", model=model,
                                           where=cols[0])
mass = state.int_slider("Top predictions cover (% probability)", 50, 99, key="mass", default=95, where=cols[1])
node_pct = state.int_slider("Keep nodes with (% of influence)", 10, 99, key="node_t", default=80, where=cols[2])
edge_pct = state.int_slider("Keep edges with (‰ of influence)", 500, 999, key="edge_t", default=980, where=cols[3])
cols = st.columns([1, 3])
budget = state.int_input("Feature-node budget", 16, 65536, key="budget", default=4096, where=cols[0],
                         help="At most this many feature nodes: the most influential are expanded first; errors, "
                              "token embeddings and targets are always nodes. A graph over the budget is shown within "
                              "it, with a notice.")
zero_bos = state.checkbox("Zero the BOS position (circuit-tracer's convention)", key="zero_bos", where=cols[1],
                          help="Position 0 (the BOS token when the prompt starts with one, whatever token it is "
                               "otherwise) gets no feature nodes and its error nodes carry nothing: what the MLPs write "
                               "there counts as a constant, as in circuit-tracer. The interventions below use the same "
                               "graph.")
if target_text and target is None:
    st.stop()

request = AttributionGraphRequest(tokens=tuple(ids), targets=(target,) if target is not None else (),
                                  logit_mass=mass / 100, node_threshold=node_pct / 100, edge_threshold=edge_pct / 1000,
                                  max_feature_nodes=budget, transcoders=fingerprint, zero_bos=zero_bos)
problem = view.dtype_problem(ctx.dtype)
if problem:
    st.error(md_escape(problem), icon=":material/error:")
    st.stop()
bar = st.progress(0.0, text="Building the graph…")


def report(done: int, total: int) -> None:
    bar.progress(min(1.0, done / max(total, 1)), text=f"Building the graph… {done}/{total} backward rows and checks")


with guard("building the attribution graph"):
    try:
        result = run_experiment(model, "attribution_graph", attribution_graph, request, device=ctx.device,
                                progress=report, **chosen.run_kwargs())
    except ValueError as exc:
        problem = view.graph_failure(exc, len(ids))
        if problem is None:
            raise
        st.error(md_escape(problem), icon=":material/error:")
        st.stop()
    finally:
        bar.empty()

if result.notice:
    st.info(md_escape(result.notice), icon=":material/info:")
if request.zero_bos:
    st.caption(f"BOS position zeroed: position 0 ({md_escape(repr(view.position_names(model, result)[0]))}) has no "
               "feature nodes and its error nodes carry nothing; what its MLPs write counts as a constant.")
names = feature_names(ctx)  # the dashboards, and what to say without them (ui/feature_labels.py)
dash, no_dash = names.dash, names.why_none
labels = view.node_labels(model, result, dash)
names.note()
all_ids = node_ids(result)
supernodes, note = view.read_supernodes(set(all_ids))
if note:
    st.info(md_escape(note), icon=":material/info:")

cols = st.columns(5)
cols[0].metric("Nodes kept", f"{len(result.node_kind):,}", help=f"of {result.full_nodes:,} in the full graph "
               f"({result.full_features:,} active features)")
cols[1].metric("Edges kept", f"{int((result.adjacency != 0).sum()):,}", help=f"of {result.full_edges:,} nonzero edges in the full graph")
cols[2].metric("Completeness error", f"{result.completeness_error:.1e}",
               help="Largest |node input − incoming edges − bias| over the full graph (exact up to float rounding).")
corr, frozen = result.check_correlation, result.check_correlation_frozen
cols[3].metric(f"Check: top {len(result.check_nodes)} features", "n/a" if corr is None else f"r = {corr:.2f}",
               delta=None if frozen is None else f"r = {frozen:.2f} frozen", delta_color="off",
               help="Each feature zeroed in the real model: correlation of the real change of the first target's logit "
                    "with the graph's prediction. Big number: attention and norms recomputed (the real model). Below: "
                    "attention patterns and norm scales frozen at the clean run's values, the graph's assumptions "
                    "(the MLPs stay real).")
cols[4].metric("Time", f"{sum(result.seconds.values()):.1f} s")
scores = st.columns(5)
for col, (name, value, pruned, what) in zip(scores, (
        ("Replacement score", result.replacement_score, result.pruned_replacement_score,
         "Share of the targets' input that flows from tokens through features rather than error nodes (1: no error)."),
        ("Completeness score", result.completeness_score, result.pruned_completeness_score,
         "Influence-weighted share of each node's input that comes from non-error nodes."))):
    col.metric(name, "n/a" if value is None else f"{value:.3f}", delta=None if pruned is None else f"{pruned:.3f} pruned",
               delta_color="off", help=what)
tokens_shown, targets_shown = view.position_names(model, result), view.target_names(model, result)
targets_text = ", ".join(f"{md_escape(repr(t))} ({p:.2f})" for t, p in zip(targets_shown, result.logit_probs))
capped = (f" before the soft cap (this model caps its logits at {model.cfg.output_logits_soft_cap:g} · tanh(logit / "
          f"{model.cfg.output_logits_soft_cap:g}), which is not linear; the probabilities are the model's)"
          if model.cfg.output_logits_soft_cap > 0 else "")
st.caption(f"Targets (demeaned logits at the last position{capped}, with their probability): {targets_text}. Nodes: transcoder "
           "features (blue), MLP errors (grey), token embeddings (bottom), logits (top); size by influence on the "
           "targets; edges blue positive, red negative. Click a feature or drag a box to select; click an edge's midpoint "
           "(diamond) between two positions to explain the attention behind it (below).")

# -- the graph ----------------------------------------------------------------------------------
choices = {node_id: f"{label} [{node_id}]" for node_id, label in zip(all_ids, labels)}
# The selection drawn dark: this session's, or on a link's first load the URL's.
previous = st.session_state.get("selected", st.query_params.get("selected", "").split(","))
nodes, edges, centres = graph_tables(result, labels, supernodes, frozenset(previous), tokens=tokens_shown)
n_drawn = state.int_slider("Edges drawn (the strongest)", 20, 2000, key="n_edges", default=300)
drawn = edges.reindex(edges["weight"].abs().sort_values(ascending=False).index[:n_drawn])
if len(drawn) < len(edges):
    st.caption(f"Drawing the {len(drawn):,} strongest of the {len(edges):,} kept edges; the exports hold them all.")
fig = graph_figure(result, nodes, drawn, centres, tokens=tokens_shown)
event = st.plotly_chart(fig, key="graph_chart", on_select="rerun", selection_mode=("points", "box", "lasso"))
picked, picked_edges = selected_ids(event)
picked = [i for i in picked if i in choices]
# One clicked edge picks the head and positions of the QK explanation below (ui/qk_pick.py); the widgets stay.
qk_said = None
if len(picked_edges) == 1 and not picked and picked_edges != st.session_state.get("_graph_edge_picked"):
    st.session_state["_graph_edge_picked"] = picked_edges
    with guard("reading the prompt's attention"):
        patterns = run_experiment(model, "attention_patterns", attention_patterns, AttentionRequest(tokens=tuple(ids)),
                                  device=ctx.device).patterns
    qk_choice, qk_said = edge_qk_choice(result, picked_edges[0], patterns)
    for qk_widget, qk_value in (qk_choice or {}).items():
        state.set_value(qk_widget, qk_value)
# A new pick in the chart replaces the selection (once: the list below can then edit it freely).
if picked and picked != st.session_state.get("_graph_picked"):
    st.session_state["_graph_picked"] = picked
    if set(picked) != set(previous):
        st.session_state["selected"] = picked
        st.rerun()  # redraw with the new selection dark
selection = state.multiselect("Selected nodes", list(choices), key="selected", format_func=lambda i: choices[i])

edge_rows = edges.assign(source_label=[labels[all_ids.index(s)] for s in edges["source"]],
                         target_label=[labels[all_ids.index(t)] for t in edges["target"]])
snippet = experiment_snippet(ctx, attribution_graph, request, "print(result.node_kind, result.adjacency.shape)",
                             prompt=ctx.prompt)
export_bar("attribution_graph", df=edge_rows, fig=fig, snippet=snippet)
viewer = graph_json(result, "circuit-explorer-graph", ctx.prompt, labels=dict(enumerate(labels)),
                    supernodes=[(g[0], [all_ids.index(m) for m in g[1:]]) for g in supernodes],
                    pinned=[all_ids.index(i) for i in selection], model_name=ctx.model_name)
cols = st.columns(2)
cols[0].download_button("Graph (viewer JSON)", data=json.dumps(viewer), file_name="attribution_graph.json",
                        mime="application/json", key="json_graph", on_click="ignore", icon=":material/download:",
                        help="The circuit-tracer / Neuronpedia graph format (metadata, qParams, nodes, links).")
cols[1].download_button("Nodes (CSV)", data=nodes.drop(columns=["hover", "color", "size", "text", "text_shift"]).to_csv(index=False),
                        file_name="attribution_graph_nodes.csv", mime="text/csv", key="csv_nodes", on_click="ignore",
                        icon=":material/download:")

with st.expander(f"Check: the {len(result.check_nodes)} most influential features, each zeroed"):
    check = pd.DataFrame({
        "feature": [labels[i] for i in result.check_nodes], "node": [all_ids[i] for i in result.check_nodes],
        "graph's prediction": [round(v, 4) for v in result.check_predicted.tolist()],
        "real model": [round(v, 4) for v in result.check_actual.tolist()],
        "real model, attention and norms frozen": [round(v, 4) for v in result.check_actual_frozen.tolist()],
        "real model's gradient, every path": [round(v, 4) for v in result.check_predicted_full.tolist()]
        if result.check_predicted_full is not None else [None] * len(result.check_nodes),
        "direct edge only": [round(v, 4) for v in result.check_direct.tolist()]})
    st.caption(f"Change of {md_escape(repr(targets_shown[0]))}'s demeaned logit. The graph freezes "
               "attention and norms; where the real model's column departs from the frozen one, attention re-routing or "
               "renormalization (the final norm shrinking a removed feature's share) is the reason. The real model's "
               "gradient through every path (attention moving; at the midpoint of the zeroing, one backward pass) "
               "predicts the real column with r = "
               + ("n/a" if result.check_correlation_full is None else f"{result.check_correlation_full:.2f}") + ".")
    st.dataframe(check, hide_index=True, key="check_table")
    export_bar("graph_check", df=check)

# -- a clicked feature's dashboard ----------------------------------------------------------------------
features = [i for i in selection if result.node_kind[all_ids.index(i)] == "feature"]
if len(selection) == 1 and features:
    i = all_ids.index(features[0])
    view.feature_card(model, dash, result.node_layer[i], result.node_feature[i], why_none=no_dash)
    feature_link(st, ctx, result.node_layer[i], result.node_feature[i], label=md_escape(f"{labels[i]} on the Features page"))

# -- supernodes ----------------------------------------------------------------------------------
st.subheader("Supernodes")
cols = st.columns([2, 1, 1])
name = cols[0].text_input("Name for the selected nodes", key="supernode_name", max_chars=60)
if cols[1].button("Group selected", key="group", disabled=not (selection and name.strip())):
    supernodes = [g for g in supernodes if g[0] != name.strip()] + [[name.strip()] + list(selection)]
    view.write_supernodes(supernodes)
    st.rerun()  # redraw the graph with the new group's colour
if cols[2].button("Clear supernodes", key="clear_groups", disabled=not supernodes):
    view.write_supernodes([])
    st.rerun()
if supernodes:
    influence = dict(zip(all_ids, result.node_influence.tolist()))
    st.dataframe(pd.DataFrame([{"supernode": g[0], "members": len(g) - 1,
                                "influence (sum)": round(sum(influence[m] for m in g[1:]), 4),
                                "nodes": ", ".join(labels[all_ids.index(m)] for m in g[1:])} for g in supernodes]),
                 hide_index=True, key="supernodes_table")

# -- why a head attends where it does (ui/qk_view.py) ----------------------------------------------
if qk_said:
    st.info(md_escape(qk_said), icon=":material/ads_click:")
qk_section(ctx, model, ids, fingerprint, dash)

# -- interventions -----------------------------------------------------------------------------------
st.subheader("Intervene on the selected features")
if not features:
    st.caption("Select feature nodes (click, box or the list above) to zero or scale them in the real model.")
    st.stop()
cols = st.columns(2)
mode = state.radio("Set them to", ["zero", "a multiple of their activation"], key="mode", default="zero", where=cols[0],
                   horizontal=True)
factor = state.int_slider("Multiple (%)", -200, 500, key="factor", default=200, where=cols[1]) / 100
clamps = []
for node_id in features:
    i = all_ids.index(node_id)
    value = 0.0 if mode == "zero" else factor * float(result.node_activation[i])
    clamps.append((result.node_layer[i], result.node_pos[i], result.node_feature[i], value))
intervention = GraphInterventionRequest(tokens=tuple(ids), clamps=tuple(clamps), targets=request.targets,
                                        logit_mass=request.logit_mass, transcoders=fingerprint, zero_bos=request.zero_bos)
with guard("running the intervention"):
    change = run_experiment(model, "graph_intervention", graph_intervention, intervention, device=ctx.device,
                            **chosen.run_kwargs())
cols = st.columns(2)
cols[0].markdown("**Top predictions, before → after**")
cols[0].dataframe(pd.DataFrame({"before": [token_name(model, i, t) for i, t in zip(change.before_ids.tolist(), change.before_tokens)],
                                "p before": [round(p, 4) for p in change.before_probs.tolist()],
                                "after": [token_name(model, i, t) for i, t in zip(change.after_ids.tolist(), change.after_tokens)],
                                "p after": [round(p, 4) for p in change.after_probs.tolist()]}), hide_index=True,
                  key="intervention_predictions")
changes = pd.DataFrame({"target": [token_name(model, i, t) for i, t in zip(change.target_ids.tolist(), change.target_tokens)],
                        "real model (attention recomputed)": [round(v, 4) for v in change.actual_change.tolist()],
                        "graph's prediction (frozen attention)": [round(v, 4) for v in change.predicted_change.tolist()]})
cols[1].markdown("**Change of each target's demeaned logit**")
cols[1].dataframe(changes, hide_index=True, key="intervention_changes")
export_bar("graph_intervention", df=changes,
           snippet=experiment_snippet(ctx, graph_intervention, intervention, "print(result.actual_change, result.predicted_change)",
                                      prompt=ctx.prompt))
