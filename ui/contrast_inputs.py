"""The corrupted prompt and answer pair that every clean-vs-corrupted page asks for, written once."""

from __future__ import annotations

import streamlit as st

from ui import state
from ui.errors import UserInputError, guard
from ui.derive_contrast import derive_corrupted_prompt
from ui.widgets import answer_pair_guesses, answer_pair_inputs, prompt_input


def contrast_inputs(ctx, model, clean_tokens):
    """Corrupted prompt (derived from the clean one by default, or by a button) and answer / wrong answer.

    Returns (corrupted_text, corrupted_tokens, answer_text, answer, wrong_text, wrong) as the widgets give them.
    """
    guesses = []
    if not {"answer", "wrong_answer", "corrupted"} <= set(st.session_state):
        guesses = answer_pair_guesses(model, clean_tokens)
    guesses += [""] * (2 - len(guesses))
    default_corrupted = ""
    if "corrupted" not in st.session_state:
        answer0 = st.session_state.get("answer") or st.query_params.get("answer") or guesses[0]
        wrong0 = st.session_state.get("wrong_answer") or st.query_params.get("wrong_answer") or guesses[1]
        default_corrupted = derive_corrupted_prompt(model, ctx.prompt, answer0, wrong0) or ctx.prompt

    def derive_from_clean() -> None:
        derived = derive_corrupted_prompt(model, ctx.prompt, st.session_state.get("answer"), st.session_state.get("wrong_answer"))
        state.set_value("corrupted", derived or ctx.prompt)

    corrupted_text, corrupted_tokens = prompt_input("Corrupted prompt", key="corrupted", model=model,
                                                    default=default_corrupted, area=False, settings=ctx.settings)
    st.button("Derive a corrupted prompt from the clean one", key="derive_corrupted", on_click=derive_from_clean,
              help="Replaces the first whole-word occurrence of the answer token by the wrong answer, spaced as it was (or "
                   "breaks the first repeated word with another word of the prompt).")
    answer_text, answer, wrong_text, wrong = answer_pair_inputs(model, clean_tokens, guesses)
    return corrupted_text, corrupted_tokens, answer_text, answer, wrong_text, wrong


def preset_with_corrupted(model):
    """A preset filter for the contrast pages: a preset without a corrupted prompt gets one derived from
    its clean prompt, or is not offered when none can be derived."""

    def derive(preset: dict) -> dict | None:
        if preset.get("corrupted_prompt"):
            return preset
        corrupted = derive_corrupted_prompt(model, preset.get("prompt", ""), preset.get("answer"),
                                            preset.get("wrong_answer"))
        if corrupted is None:
            return None
        preset["corrupted_prompt"] = corrupted
        return preset

    return derive


def corrupted_ids_or_stop(clean_ids: list[int], corrupted_tokens, answer, wrong_text, wrong) -> list[int]:
    """The corrupted prompt's ids, once every contrast input is usable (else the page stops: each input
    already shows its own message), checked to be as long as the clean prompt."""
    if corrupted_tokens is None or answer is None or (wrong_text and wrong is None):
        st.stop()
    corrupted_ids = [int(t) for t in corrupted_tokens[0].tolist()]
    with guard("checking the prompts"):
        if len(corrupted_ids) != len(clean_ids):
            raise UserInputError(f"The clean and corrupted prompts must have the same number of tokens: the clean "
                                 f"prompt has {len(clean_ids)}, the corrupted prompt has {len(corrupted_ids)}.")
    return corrupted_ids
