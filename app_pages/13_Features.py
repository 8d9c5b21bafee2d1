"""Features: a dictionary's sparse features on the prompt (transcoders, skip transcoders, SAEs, cross-layer
transcoders), a feature's (or neuron's) dashboard over the held-out split where one exists, and steering by clamping
or zeroing features (a cross-layer transcoder's edit changes the feature's writes into every later layer)."""

import html

import pandas as pd
import streamlit as st

from lens_core.experiments.views.features import (FeatureActivationsRequest, SteeringRequest, UnitActivationRequest,
                                            feature_activations_on_prompt, feature_steering, unit_activation)
from lens_core.features import FeaturesUnavailable
from lens_core.features.per_layer import dictionary_layers, layer_width
from ui import charts, state
from ui.attribution_graph_view import require_dictionary
from ui.errors import guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.feature_labels import feature_names
from ui.feature_view import check_edits, parse_edits, prompt_strip, unit_dashboard
from ui.model import run_experiment
from ui.widgets import app_context, preset_picker

st.title("Features")
ctx = app_context()
model = ctx.require_model()
chosen = require_dictionary(ctx, "No sparse features for this model")
tset, fingerprint = chosen.dictionary, chosen.fingerprint

preset_picker("features", {"prompt": "prompt"}, ctx)
model, tokens = ctx.require_prompt()
ids = tuple(int(t) for t in tokens[0].tolist())
names = feature_names(ctx)  # every feature below is named by its top tokens (ui/feature_labels.py)
dash = names.dash
layers_all = [str(l) for l in dictionary_layers(tset)]
cross_layer = chosen.kind == "cross-layer transcoder"

# -- which features fire where --------------------------------------------------------------
st.subheader("Features on this prompt")
names.note()
cols = st.columns([3, 2, 2])
shown = state.multiselect("Layers", layers_all, key="layers", default=layers_all, where=cols[0])
rows = state.int_slider("Features per layer (largest peak on the prompt)", 1, 30, key="rows", default=10, where=cols[1])
per_token = state.int_slider("Features listed per token", 1, 16, key="per_token", default=5, where=cols[2])
if not shown:
    st.info("Pick at least one layer.", icon=":material/info:")
    st.stop()
request = FeatureActivationsRequest(tokens=ids, layers=tuple(int(l) for l in shown), top_per_token=per_token,
                                    top_per_layer=rows, transcoders=fingerprint)
with guard("computing feature activations"):
    acts = run_experiment(model, "feature_activations", feature_activations_on_prompt, request, device=ctx.device, **chosen.run_kwargs())

matrix, labels, units = [], [], []
for i, layer in enumerate(acts.layers):
    for r, feature in enumerate(acts.peak_features[i].tolist()):
        if feature >= 0:
            matrix.append(acts.peak_acts[i, r].tolist())
            labels.append(names.short(layer, feature))
            units.append((layer, feature))
if not matrix:
    st.info("No feature of these layers fires on this prompt.", icon=":material/info:")
    st.stop()
hover = [["<br>" + html.escape(f"{names(*units[r])} at {charts.visible(acts.str_tokens[p])!r}: {matrix[r][p]:.3f}")
          for p in range(len(ids))] for r in range(len(labels))]
fig = charts.heatmap(matrix, acts.str_tokens, labels, title="Feature activation by token (click a row to inspect it)",
                     x_title="position", y_title="feature (layer#index, top input → promoted token)", value_name="activation", hover=hover,
                     colorscale="Reds")
event = st.plotly_chart(fig, key="feature_chart", on_select="rerun", selection_mode="points")
picked = [p.get("y") for p in (event.selection.points if event and event.selection else [])]
if picked and isinstance(picked[0], (int, float)) and 0 <= int(picked[0]) < len(units):  # the row's index
    picked_layer, picked_index = units[int(picked[0])]
    state.set_value("unit_kind", "feature")
    state.set_value("unit_layer", str(picked_layer))
    state.set_value("unit_index", int(picked_index))
st.caption(f"Active features per token (mean over the prompt): "
           + ", ".join(f"L{l}: {acts.n_active[i].float().mean():.1f}" for i, l in enumerate(acts.layers))
           + ". Hover a cell for the activation.")
table = pd.DataFrame([
    {"layer": layer, "position": p, "token": charts.visible(acts.str_tokens[p]),
     "features": ", ".join(f"{names.short(layer, f)} ({a:.2f})"
                           for f, a in zip(acts.top_features[i, p].tolist(), acts.top_acts[i, p].tolist()) if f >= 0)}
    for i, layer in enumerate(acts.layers) for p in range(len(ids))])
with st.expander("Top features per token (table)"):
    st.dataframe(table, hide_index=True)
export_bar("features_on_prompt", df=table, fig=fig,
           snippet=experiment_snippet(ctx, feature_activations_on_prompt, request, "print(result.layers)",
                                      "print(result.top_features)  # [layer, pos, top]", prompt=ctx.prompt))

# -- one unit: dashboard + where it fires on the prompt -------------------------------------
st.subheader("Inspect a feature or an MLP neuron")
cols = st.columns(3)
kind = state.radio("Unit", ("feature", "neuron"), key="unit_kind", where=cols[0], horizontal=True)
layer = int(state.selectbox("Layer", layers_all, key="unit_layer", where=cols[1]))
n_units = layer_width(tset, layer) if kind == "feature" else model.cfg.d_mlp
index = state.int_input(f"{kind.capitalize()} index (0..{n_units - 1})", 0, n_units - 1, key="unit_index", default=0,
                        where=cols[2])
unit_request = UnitActivationRequest(tokens=ids, kind=kind, layer=layer, index=index, transcoders=fingerprint)
with guard(f"computing the {kind}'s activation"):
    unit_acts = run_experiment(model, "unit_activation", unit_activation, unit_request, device=ctx.device, **chosen.run_kwargs())
st.markdown(f"**{md_escape(names(layer, index) if kind == 'feature' else unit_acts.unit)}** on this "
            f"prompt (peak {float(unit_acts.acts.max()):.3f}):")
st.markdown(prompt_strip(unit_acts.str_tokens, unit_acts.acts.tolist()), unsafe_allow_html=True)
if dash is None and not chosen.bundled:
    st.info("No dashboard for this dictionary: held-out dashboards are precomputed only for the bundled transcoders.",
            icon=":material/info:")
elif dash is None:
    st.info("No precomputed dashboards (run `python -m training.build_feature_dashboards`).", icon=":material/info:")
else:
    try:
        unit = dash.unit(kind, layer, index)
    except FeaturesUnavailable as exc:
        st.warning(md_escape(str(exc)), icon=":material/warning:")
    else:
        contexts = unit_dashboard(model, unit, key="unit")
        export_bar("unit_dashboard", df=contexts,
                   snippet=("from lens_core.features.dashboards import Dashboards\n"
                            "from lens_core.features.transcoder import DEFAULT_TRANSCODERS_DIR\n\n"
                            f"unit = Dashboards(DEFAULT_TRANSCODERS_DIR).unit({kind!r}, {layer}, {index})\n"
                            "print(unit['density'], unit['logits_up'], unit['top'][0])\n"))

# -- steering -----------------------------------------------------------------------------------
st.subheader("Steer: clamp or zero features")
default_edit = f"L{layer}#{index}=0" if kind == "feature" else ""
cols = st.columns([3, 2, 2])
edit_text = state.text_input("Features to set (L<layer>#<feature>=<value>, comma-separated; 0 zeroes a feature)",
                             key="edits", default=default_edit, where=cols[0])
where_text = state.radio("At", ("every position", "the last position"), key="steer_at", where=cols[1], horizontal=True)
keep_error = state.checkbox("Keep the transcoders' error term", key="error_term", default=True, where=cols[2],
                            help="On: only the edit changes the model (the rest of the MLP output is kept exactly). "
                                 + ("Off: the MLP outputs of every layer the edited features write (from the lowest "
                                    "edited layer to the last) are replaced by the cross-layer transcoder's "
                                    "reconstruction." if cross_layer else
                                    "Off: the edited layers' MLPs are replaced by their transcoders entirely."))
if cross_layer:
    st.caption("A cross-layer transcoder's feature of layer L writes into the MLP output of every layer from L to the "
               "last: setting it changes all of those writes.")
edits, bad = parse_edits(edit_text)
edits, unusable = check_edits(edits, tset)
for problem in unusable:
    cols[0].error(md_escape(problem) + " This edit is left out.", icon=":material/error:")
if bad:
    st.warning("Not understood (write e.g. L1#42=5): " + ", ".join(md_escape(repr(b)) for b in bad),
               icon=":material/warning:")
if edits:
    st.dataframe(pd.DataFrame({"feature": [names(l, f) for l, f, _ in edits], "set to": [v for *_, v in edits]}),
                 hide_index=True, key="steer_edits")
    steer_request = SteeringRequest(tokens=ids, edits=tuple(edits),
                                    positions=(len(ids) - 1,) if where_text == "the last position" else (),
                                    error_term=keep_error, top_k=10, transcoders=fingerprint)
    with guard("steering"):
        steered = run_experiment(model, "feature_steering", feature_steering, steer_request, device=ctx.device, **chosen.run_kwargs())
    last = len(ids) - 1
    side = pd.DataFrame({"original": [charts.visible(t) for t in steered.original_tokens[last]],
                         "p (original)": [round(float(p), 4) for p in steered.original_probs[last]],
                         "steered": [charts.visible(t) for t in steered.steered_tokens[last]],
                         "p (steered)": [round(float(p), 4) for p in steered.steered_probs[last]]})
    st.markdown(f"Next-token predictions after the last token, original beside steered "
                f"(KL {float(steered.kl[last]):.4f} nats):")
    st.dataframe(side, hide_index=True)
    kl_fig = charts.bar(steered.kl.tolist(), charts.position_labels(steered.str_tokens),
                        title="KL(original ‖ steered) of the next-token distribution at each position",
                        x_title="position", y_title="KL (nats)")
    st.plotly_chart(kl_fig, key="kl_chart")
    export_bar("steering", df=side, fig=kl_fig,
               snippet=experiment_snippet(ctx, feature_steering, steer_request, "print(result.steered_tokens[-1])",
                                          "print(result.kl)", prompt=ctx.prompt))
