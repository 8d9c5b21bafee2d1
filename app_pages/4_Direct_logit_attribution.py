"""Direct logit attribution: how much each layer, head and neuron writes along the answer's logit direction."""

import pandas as pd
import streamlit as st

from lens_core.experiments.views.dla import DLARequest, direct_logit_attribution
from ui import charts, state
from ui.errors import guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.widgets import (
    answer_pair_inputs,
    app_context,
    count_tokens,
    preset_picker,
)

st.title("Direct logit attribution")
ctx = app_context()
model = ctx.require_model()
# A preset's prompt has its own length: it also moves the position to its last token.
preset_picker("logit_attribution",
              {"prompt": "prompt", "answer": "answer", "wrong_answer": "wrong_answer", "position": "position"}, ctx,
              derive=lambda preset: {**preset, "position": count_tokens(model, preset.get("prompt", "")) - 1})
model, tokens = ctx.require_prompt()
cfg = model.cfg
ids = [int(t) for t in tokens[0].tolist()]
n_pos = len(ids)

# -- inputs ----------------------------------------------------------------------------
answer_text, answer, wrong_text, wrong = answer_pair_inputs(model, tokens)
cols = st.columns(3)
position = state.int_slider("Position (where the answer is predicted)", 0, n_pos - 1, key="position", default=n_pos - 1,
                            where=cols[0])
neuron_layer = state.int_slider("Layer for the top neurons", 0, cfg.n_layers - 1, key="layer", default=cfg.n_layers - 1,
                                where=cols[1])
n_neurons = state.int_slider("Top neurons shown", 1, 50, key="n_neurons", default=10, where=cols[2])
if answer is None or (wrong_text and wrong is None):
    st.stop()

request = DLARequest(tokens=tuple(ids), answer=answer, wrong_answer=wrong, position=position, neuron_layer=neuron_layer,
                     top_k_neurons=n_neurons)
with guard("computing the direct logit attribution"):
    result = run_experiment(model, "dla", direct_logit_attribution, request, device=ctx.device)

metric = (f"logit({charts.visible(answer_text)}) − logit({charts.visible(wrong_text)})" if wrong is not None
          else f"logit({charts.visible(answer_text)})")
at_token = charts.visible(result.str_tokens[position])
columns = iter(st.columns(4 if result.soft_capped else 3))
next(columns).metric(md_escape(f"Model's {metric}"), f"{result.logit_diff:.3f}")
if result.soft_capped:
    next(columns).metric("The same before the soft cap", f"{result.uncapped_logit_diff:.3f}")
next(columns).metric("Sum of the components", f"{float(result.decomposed.sum()):.3f}")
next(columns).metric("Biases (final norm + unembedding)", f"{result.bias_total:.3f}")
if result.soft_capped:
    st.caption(f"At position {position} ({md_escape(at_token)}), the final norm's scale is frozen at the value the model used. "
               f"This model soft-caps its logits ({cfg.output_logits_soft_cap:g} · tanh(logit / {cfg.output_logits_soft_cap:g})), "
               "which is not linear: the components decompose the logits before the cap, so their sum plus the biases is "
               "the metric before the soft cap, not the model's (capped) metric.")
else:
    st.caption(f"At position {position} ({md_escape(at_token)}), the final norm's scale is frozen at the value the model used, "
               "so the metric is the components' sum plus the biases.")

axis = f"{metric} before the soft cap" if result.soft_capped else metric  # what the bars add up to

# -- by layer component ------------------------------------------------------------------
st.subheader("By layer component")
cols = st.columns(2)
fig_acc = charts.bar(result.accumulated, result.accumulated_labels, title="Accumulated residual stream",
                     x_title="residual entering each layer, then final", y_title=axis)
cols[0].plotly_chart(fig_acc, key="dla_accumulated")
fig_dec = charts.bar(result.decomposed, result.component_labels, title="Each component's direct contribution",
                     x_title="component", y_title=axis)
cols[1].plotly_chart(fig_dec, key="dla_decomposed")
components = pd.DataFrame(
    [{"view": "accumulated", "component": label, "attribution": float(v)}
     for label, v in zip(result.accumulated_labels, result.accumulated)]
    + [{"view": "decomposed", "component": label, "attribution": float(v)}
       for label, v in zip(result.component_labels, result.decomposed)]
)
base_snippet = experiment_snippet(ctx, direct_logit_attribution, request, prompt=ctx.prompt, answer=answer_text,
                                  wrong_answer=wrong_text or None)
export_bar("dla_components", df=components, fig=fig_dec,
           snippet=base_snippet + "print(dict(zip(result.component_labels, result.decomposed.tolist())))\n")

# -- by head ----------------------------------------------------------------------------------
st.subheader("By head")
head_names = [f"H{h}" for h in range(cfg.n_heads)]
fig_heads = charts.heatmap(result.heads, head_names, result.layer_labels, title="Each head's direct contribution",
                           x_title="head", y_title="layer", value_name="attribution", zmid=0.0, labels_are_tokens=False)
st.plotly_chart(fig_heads, key="dla_heads")
heads = pd.DataFrame([{"layer": l, "head": h, "attribution": float(result.heads[l, h])}
                      for l in range(cfg.n_layers) for h in range(cfg.n_heads)])
export_bar("dla_heads", df=heads, fig=fig_heads, snippet=base_snippet + "print(result.heads)  # [layer, head]\n")

# -- top neurons ------------------------------------------------------------------------------
st.subheader(f"Top neurons of layer {result.neuron_layer}")
top = [int(i) for i in result.top_neurons.tolist()]
neurons = pd.DataFrame([{"layer": result.neuron_layer, "neuron": i, "attribution": float(result.neurons[i])} for i in top])
fig_neurons = charts.bar([float(result.neurons[i]) for i in top], [f"N{i}" for i in top],
                         title=f"Largest |attribution| among layer {result.neuron_layer}'s {result.neurons.numel()} neurons",
                         x_title="neuron", y_title=axis)
cols = st.columns([3, 2])
cols[0].plotly_chart(fig_neurons, key="dla_neurons")
cols[1].dataframe(neurons, hide_index=True, key="dla_neurons_table")
export_bar("dla_neurons", df=neurons, fig=fig_neurons,
           snippet=base_snippet + "print(result.top_neurons, result.neurons[result.top_neurons])\n")
