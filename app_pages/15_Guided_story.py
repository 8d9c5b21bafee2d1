"""Guided story: one repeated sequence followed across the app (predictions, detectors, patching, the edge circuit,
the attribution graph, why the induction head attends where it does), each step a live result with what it shows and a link that opens it on its own page."""

from types import SimpleNamespace

import streamlit as st

from ui import charts, story
from ui.attribution_graph_view import dashboards_for, node_labels, transcoders_for
from ui.circuit_view import circuit_graph_figure
from ui.errors import guard, md_escape
from ui.links import edge_link, edge_params, feature_link, head_links, open_in
from ui.model import run_experiment
from ui.widgets import app_context, derive_corrupted_prompt, load_presets

st.title("How the bundled model completes a repeated sequence")
ctx = app_context()
model = ctx.require_model()
if ctx.model_name != "default":
    st.info("This story follows the bundled model (its heads, circuit and transcoder features are named from its own "
            "results). Pick the model **default** in the sidebar to run it.", icon=":material/info:")
    if ctx.settings.model_allowed("default"):
        def use_bundled() -> None:
            st.session_state["model"] = "default"
            st.query_params["model"] = "default"
        st.button("Use the bundled model", on_click=use_bundled, key="story_use_bundled")
    st.stop()

preset = next((p for p in load_presets("default") if str(p.get("name", "")).startswith("Induction")), None)
if preset is None:
    st.error("The bundled model's presets have no induction prompt to follow.", icon=":material/error:")
    st.stop()
with guard("preparing the story's prompts"):
    s = story.inputs(model, preset["prompt"], preset["answer"], preset["wrong_answer"], derive_corrupted_prompt)
tset, fingerprint = transcoders_for(ctx)
st.markdown(md_escape(f"The prompt is a sequence of random words, then the same words again: {s.prompt!r}. A model that "
                      f"has learned induction predicts each repeated word from the word that followed its earlier copy, "
                      f"so after the last token it should say {s.answer!r}. The corrupted prompt for the patching steps "
                      f"changes that earlier copy: {s.corrupted!r}."))
st.caption("Every number below is computed now on the loaded model (and cached); the links open each step on its own page "
           "with this prompt.")

steps = None if tset is not None else {"predictions", "detectors", "patch_resid", "patch_heads", "edges", "circuit"}
with guard("running the story"):
    results = story.compute(lambda name, fn, request: run_experiment(model, name, fn, request, device=ctx.device), s,
                            fingerprint if tset is not None else "none", steps)
link_ctx = SimpleNamespace(model_name=ctx.model_name, dtype=ctx.dtype, prompt=s.prompt)
contrast = {"corrupted": s.corrupted, "answer": s.answer, "wrong_answer": s.wrong_answer}

# -- 1. predictions and loss -----------------------------------------------------------------------
st.header("1. Predictions and loss")
pred = results["predictions"]
loss = pred.loss_per_token.float().tolist()
labels = [f"{p}: {charts.visible(pred.str_tokens[p])} → {charts.visible(pred.str_tokens[p + 1])}" for p in range(len(loss))]
st.plotly_chart(charts.bar(loss, labels, title="Loss predicting each next token", x_title="position: token → next token",
                           y_title="loss (nats)"), key="story_loss")
st.markdown(md_escape(story.say_predictions(pred, s.ids)))
open_in(st, "Prompt_and_predictions", "Open in Prompt & predictions", link_ctx)

# -- 2. head detectors ---------------------------------------------------------------------------
st.header("2. Previous-token and induction heads")
det = results["detectors"]
layers, heads = det.axis_labels
cols = st.columns(2)
for col, (field, name) in zip(cols, (("previous_token", "Previous-token score"), ("induction", "Induction score"))):
    fig = charts.heatmap(getattr(det, field), heads, layers, title=name, x_title="head", y_title="layer",
                         value_name="score", labels_are_tokens=False)
    fig.data[0].update(zmin=0.0, zmax=1.0)
    col.plotly_chart(fig, key=f"story_{field}")
st.markdown(md_escape(story.say_detectors(det)))
open_in(st, "Head_detectors", "Open in Head detectors", link_ctx, det_source="prompt", detector="induction")
head_links(st, link_ctx, *story.best_head(det.induction), caption="The strongest induction head:")

# -- 3. activation patching ------------------------------------------------------------------------
st.header("3. Activation patching")
resid, by_head = results["patch_resid"], results["patch_heads"]
cols = st.columns([3, 2])
cols[0].plotly_chart(charts.heatmap(resid.normalized, resid.clean_str_tokens, resid.axis_labels[0],
                                    title="Residual stream restored at one position (normalized)", x_title="position",
                                    y_title="layer", value_name="normalized", zmid=0.0), key="story_patch_resid")
cols[1].plotly_chart(charts.heatmap(by_head.normalized, by_head.axis_labels[1], by_head.axis_labels[0],
                                    title="One head's output restored (normalized)", x_title="head", y_title="layer",
                                    value_name="normalized", zmid=0.0, labels_are_tokens=False), key="story_patch_heads")
st.markdown(md_escape(story.say_patching(resid, by_head, story.corrupted_position(s))))
open_in(st, "Activation_patching", "Open in Activation patching", link_ctx, sweeps=["resid_pre", "head_out_all_pos"],
        **contrast)
head_links(st, link_ctx, *story.best_head(by_head.normalized), caption="The head that restores most:",
           answer=s.answer, wrong_answer=s.wrong_answer)

# -- 4. the edge circuit ------------------------------------------------------------------------------
st.header("4. The discovered edge circuit")
scores, faith = results["edges"], results["circuit"]
mask, table = story.circuit_rows(scores, faith)
fig, _ = circuit_graph_figure(scores, mask, model.cfg.n_heads, model.cfg.n_layers,
                              title=f"EAP-IG: the top {story.CIRCUIT_EDGES} edges")
st.plotly_chart(fig, key="story_circuit")
st.markdown(md_escape(story.say_circuit(faith, table)))
open_in(st, "Circuit_discovery", "Open in Circuit discovery", link_ctx, task="pair", method="eap_ig", select_by="size",
        n_edges=story.CIRCUIT_EDGES, **contrast)
for row in table:
    if edge_params(row["sender"], row["receiver"]) is not None:  # the strongest edge path patching can isolate
        edge_link(st, link_ctx, row["sender"], row["receiver"], contrast=contrast)
        break

# -- 5. the attribution graph ----------------------------------------------------------------------
st.header("5. The attribution graph")
if tset is None:
    st.info(md_escape(f"Skipped: {fingerprint}"), icon=":material/info:")
    st.stop()
graph = results["graph"]
names = node_labels(model, graph, dashboards_for(ctx))
order = sorted(range(len(names)), key=lambda i: -float(graph.node_influence[i]))[:12]
order = [i for i in order if graph.node_kind[i] != "logit"]
st.plotly_chart(charts.bar([float(graph.node_influence[i]) for i in order], [names[i] for i in order],
                           title=f"The most influential nodes behind {charts.visible(graph.logit_tokens[0])!r}",
                           x_title="node", y_title="influence on the target"), key="story_graph")
st.markdown(md_escape(story.say_graph(graph, names)))
open_in(st, "Attribution_graph", "Open in Attribution graph", link_ctx, target=s.answer)
top = story.top_features(graph, 1)
if top:
    feature_link(st, link_ctx, graph.node_layer[top[0]], graph.node_feature[top[0]],
                 label=md_escape(f"The most influential feature, {names[top[0]]}, on the Features page"))

# -- 6. the attention explanation ------------------------------------------------------------------------
qk = results["qk"]
st.header(f"6. Why L{qk.layer}H{qk.head} attends where it does")
st.plotly_chart(charts.heatmap(qk.group_contrast, qk.key_groups, qk.query_groups,
                               title=f"L{qk.layer}H{qk.head}, query {qk.query_pos} → key {qk.key_pos}: each pair's part of "
                                     "the score's excess over the other keys", x_title="key side", y_title="query side",
                               value_name="part of the excess", zmid=0.0, labels_are_tokens=False), key="story_qk")
st.markdown(md_escape(story.say_qk(qk)))
head_links(st, link_ctx, qk.layer, qk.head, caption=f"Open L{qk.layer}H{qk.head} in:")
