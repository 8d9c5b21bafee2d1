"""Notices about inputs that are valid but would mislead: a prompt that brings its own BOS, an answer that is
several tokens, a patching contrast too small to normalize by. Shared by every page that takes these inputs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from lens_core.experiments.views.predictions import PredictionsRequest, predictions
from ui import state
from ui.errors import guard, md_escape
from ui.model import run_experiment

SMALL_GAP = 0.05  # |clean - corrupted| under this fraction of the logits' spread: a normalized value is mostly noise
SPREAD_DEPTH = 32  # the spread is over the model's this-many likeliest next tokens (the answer guesses' request)


def _ids_without_bos(model: Any, text: str):
    try:
        return model.to_tokens(text, prepend_bos=False, truncate=True)[0]
    except TypeError:  # a to_tokens without the truncate option
        return model.to_tokens(text, prepend_bos=False)[0]


def starts_with_bos(model: Any, text: str) -> bool:
    """Whether the text itself begins with the BOS token while the model also prepends one (it would be doubled)."""
    bos = getattr(model, "bos_token_id", None)
    if bos is None or not getattr(model.cfg, "default_prepend_bos", False) or not text:
        return False
    first = _ids_without_bos(model, text)[:1].tolist()
    return first == [bos]


def bos_note(model: Any, text: str) -> str | None:
    """What to tell the user about BOS for this prompt (it starts with BOS, or is only special tokens), else None."""
    bos = getattr(model, "bos_token_id", None)
    if bos is None or not getattr(model.cfg, "default_prepend_bos", False) or not text.strip():
        return None
    tokenizer = getattr(model, "tokenizer", None)
    special = set(getattr(tokenizer, "all_special_ids", None) or [bos])
    ids = _ids_without_bos(model, text).tolist()
    bos_text = model.to_string([bos])
    if ids and all(i in special for i in ids):
        if ids == [bos]:
            return (f"The prompt is only the BOS token {bos_text!r}, which the app adds at the start of every prompt "
                    "itself: the model runs on BOS alone, once.")
        return (f"The prompt is only special tokens ({', '.join(repr(model.to_string([i])) for i in ids)}); the app adds "
                f"BOS {bos_text!r} at the start{', and uses the one you typed instead of doubling it' if ids[0] == bos else ''}.")
    if ids[:1] == [bos]:
        return (f"The prompt starts with BOS {bos_text!r}; the app adds BOS at the start of every prompt itself, "
                "so it is used once, not twice.")
    return None



def not_one_token_message(model: Any, text: str) -> str:
    """Why ``text`` is not a single token, said once: its pieces and what to enter instead."""
    try:
        pieces = list(model.to_str_tokens(text, prepend_bos=False))
    except Exception:  # noqa: BLE001 - the message must not fail
        pieces = []
    if not pieces:
        return f"{text!r} is no token for this model. Enter exactly one token."
    shown = " | ".join(repr(p) for p in pieces[:8]) + (" | …" if len(pieces) > 8 else "")
    return (f"{text!r} is not a single token for this model: it is {len(pieces)} ({shown}). "
            "Enter exactly one token; mind the leading space.")


RAW_BY_DEFAULT = ("so the raw logit difference is shown by default. Pick a corrupted prompt that changes the answer "
                  "more, or pick “normalized” to see it anyway.")


def small_gap_warning(model: Any, clean_ids: list[int], clean_metric: float, corrupted_metric: float, device: str,
                      where=st, consequence: str = RAW_BY_DEFAULT) -> bool:
    """Warn (and return True) when the clean and corrupted metrics differ by under ``SMALL_GAP`` of the logits' scale.

    The scale is the spread of the clean run's likeliest next-token logits (log p(top 1) − log p(top 32), a logit
    difference), read from the cached predictions experiment the answer guesses already ran. ``consequence`` ends
    the message: what the page does about it (by default, that it shows the raw logit difference).
    """
    with guard("measuring the logits' scale"):
        top = run_experiment(model, "predictions", predictions,
                             PredictionsRequest(tokens=tuple(clean_ids), top_k=SPREAD_DEPTH), device=device).top_probs[-1]
    spread = float(top[0].double().log() - top[-1].double().clamp_min(1e-300).log())
    gap = clean_metric - corrupted_metric
    if abs(gap) >= SMALL_GAP * spread:
        return False
    where.warning(f"Clean and corrupted differ by only {gap:+.3f} in the metric, under {SMALL_GAP:.0%} of the spread of "
                  f"the model's {len(top)} likeliest next-token logits ({spread:.2f}): the normalized value divides by "
                  f"that gap and is mostly noise, {consequence}", icon=":material/warning:")
    return True


def patching_value_choice(options, small_gap: bool, where=st, key: str = "patch_value", **kwargs) -> str:
    """A patching page's "Show" choice: "normalized" by default, the raw "logit difference" while the clean–corrupted
    gap is small (see :func:`small_gap_warning`), until the user or a link picks one; that choice is then kept.

    Call it after the baselines are known (drawing into a column made earlier keeps it beside the other inputs).
    """
    chosen = f"_{key}_chosen"
    if key not in st.session_state and key in st.query_params:
        st.session_state[chosen] = True  # a link's explicit choice
    default = "logit difference" if small_gap else "normalized"
    if not st.session_state.get(chosen) and key in st.session_state and st.session_state[key] != default:
        st.session_state[key] = default  # not picked by anyone: follow the baselines
    return state.radio("Show", list(options), key=key, default=default, where=where, horizontal=True,
                       on_change=lambda: st.session_state.update({chosen: True}), **kwargs)
