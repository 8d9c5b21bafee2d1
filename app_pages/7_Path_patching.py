"""Path patching: patch sender heads only along their paths into chosen receivers (Wang et al., IOI)."""

import pandas as pd
import streamlit as st

from lens_core.experiments.interventions.patching import DIRECTIONS
from lens_core.experiments.interventions.path_patching import PathPatchingRequest, path_patching
from ui import charts, state
from ui.errors import UserInputError, guard, md_escape
from ui.export import experiment_snippet, export_bar
from ui.model import run_experiment
from ui.notices import patching_value_choice, small_gap_warning
from ui.contrast_inputs import contrast_inputs, corrupted_ids_or_stop
from ui.widgets import app_context

VALUES = {"normalized": "normalized", "logit difference": "logit_diff", "answer probability": "answer_prob"}
SENDERS = {"sweep": "Every head, one at a time", "chosen": "Chosen heads, together"}
RECEIVERS = {"resid_final": "The final residual stream (direct paths to the logits)", "heads": "Chosen heads' inputs"}


def head_of(label: str) -> tuple[int, int]:
    layer, head = label[1:].split("H")
    return int(layer), int(head)


st.title("Path patching")
st.caption("Senders' outputs are taken from the other prompt, every other head is frozen to the base run, and only "
           "the receivers see the change (MLPs recompute, so paths through MLPs count). denoise: base = corrupted, "
           "senders from clean; noise: the reverse.")
ctx = app_context()
model, clean_tokens = ctx.require_prompt()
cfg = model.cfg
clean_ids = [int(t) for t in clean_tokens[0].tolist()]
heads = [f"L{l}H{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)]

corrupted_text, corrupted_tokens, answer_text, answer, wrong_text, wrong = contrast_inputs(ctx, model, clean_tokens)

cols = st.columns(3)
sender_mode = state.radio("Senders", list(SENDERS), key="sender_mode", default="sweep", where=cols[0],
                          format_func=SENDERS.get)
receiver_mode = state.radio("Receivers", list(RECEIVERS), key="receiver_mode", default="resid_final", where=cols[1],
                            format_func=RECEIVERS.get)
direction = state.radio("Direction", DIRECTIONS, key="direction", where=cols[2], horizontal=True,
                        help="denoise: clean senders into the corrupted run; noise: corrupted senders into the clean run.")
show_column = cols[2]  # "Show" is drawn once the baselines are known: its default depends on them

receivers: tuple = ("resid_final",)
if receiver_mode == "heads":
    rcols = st.columns([3, 1])
    chosen_receivers = state.multiselect("Receiver heads", heads[cfg.n_heads:], key="receivers",
                                         default=[f"L{cfg.n_layers - 1}H0"], where=rcols[0])
    inputs = state.multiselect("Their inputs", ["q", "k", "v"], key="recv_inputs", default=["q"], where=rcols[1])
    if not chosen_receivers or not inputs:
        st.info("Pick at least one receiver head and one of its inputs (q, k, v).", icon=":material/info:")
        st.stop()
    receivers = tuple((*head_of(r), w) for r in chosen_receivers for w in inputs)
first_receiver = cfg.n_layers if receiver_mode == "resid_final" else min(r[0] for r in receivers)
senders = None
if sender_mode == "chosen":
    options = [h for h in heads if head_of(h)[0] < first_receiver]
    chosen_senders = state.multiselect("Sender heads", options, key="senders", default=options[:1],
                                       help="Heads in layers before every receiver.")
    if not chosen_senders:
        st.info("Pick at least one sender head.", icon=":material/info:")
        st.stop()
    senders = tuple(head_of(h) for h in chosen_senders)

corrupted_ids = corrupted_ids_or_stop(clean_ids, corrupted_tokens, answer, wrong_text, wrong)
with guard("checking the receivers"):
    if first_receiver == 0:
        raise UserInputError("Receivers in layer 0 have no earlier heads to send to them: pick later receivers.")

request = PathPatchingRequest(clean_tokens=tuple(clean_ids), corrupted_tokens=tuple(corrupted_ids), answer=answer,
                              wrong_answer=wrong, receivers=receivers, senders=senders, direction=direction)
bar = st.progress(0.0, text="Path patching…")
with guard("running path patching"):
    result = run_experiment(model, "path_patching", path_patching, request, device=ctx.device,
                            progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done}/{total} sender sets"))
bar.empty()

metric = (f"logit({charts.visible(answer_text)}) − logit({charts.visible(wrong_text)})" if wrong is not None
          else f"logit({charts.visible(answer_text)})")
m = st.columns(3)
m[0].metric(md_escape(f"Clean {metric}"), f"{result.clean_logit_diff:.3f}")
m[1].metric(md_escape(f"Corrupted {metric}"), f"{result.corrupted_logit_diff:.3f}")
m[2].metric("Receivers", ", ".join(result.receiver_labels))
if corrupted_ids == clean_ids:
    st.warning("The corrupted prompt is the clean prompt: every patch changes nothing.", icon=":material/warning:")
small_gap = corrupted_ids != clean_ids and small_gap_warning(model, clean_ids, result.clean_logit_diff,
                                                             result.corrupted_logit_diff, ctx.device)
value = patching_value_choice(VALUES, small_gap, where=show_column,
                              help="normalized: (patched − corrupted) / (clean − corrupted) of the logit difference.")
field = VALUES[value]
z = getattr(result, field)
if senders is None:
    fig = charts.heatmap(z, result.axis_labels[1], result.axis_labels[0],
                         title=f"Path patching each sender into {', '.join(result.receiver_labels)} ({direction}): {value}",
                         x_title="sender head", y_title="sender layer", value_name=value,
                         zmid=None if field == "answer_prob" else 0.0, labels_are_tokens=False)
    st.plotly_chart(fig, key="path_patching")
    st.caption("Blank cells: heads in or after the first receiver's layer, which cannot send to it.")
    table = pd.DataFrame([{"sender": f"{result.axis_labels[0][l]}{result.axis_labels[1][h]}",
                           "logit difference": float(result.logit_diff[l, h]), "normalized": float(result.normalized[l, h]),
                           "answer probability": float(result.answer_prob[l, h])}
                          for l in range(z.shape[0]) for h in range(z.shape[1])])
else:
    label = result.axis_labels[0][0]
    fig = charts.bar(z, [label], title=f"Path patching {label} into {', '.join(result.receiver_labels)}: {value}",
                     x_title="senders", y_title=value)
    st.metric(f"{label} → {', '.join(result.receiver_labels)}: {value}", f"{float(z[0]):.4f}")
    st.plotly_chart(fig, key="path_patching")
    table = pd.DataFrame([{"senders": label, "logit difference": float(result.logit_diff[0]),
                           "normalized": float(result.normalized[0]), "answer probability": float(result.answer_prob[0])}])
snippet = experiment_snippet(ctx, path_patching, request, "print(result.logit_diff)", "print(result.normalized)",
                             clean_prompt=ctx.prompt, corrupted_prompt=corrupted_text, answer=answer_text,
                             wrong_answer=wrong_text or None)
export_bar("path_patching", df=table, fig=fig, snippet=snippet)
