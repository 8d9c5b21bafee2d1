"""Shared widgets: the sidebar (model, dtype, device, prompt), prompt and answer-token inputs, presets.

Every input is URL-backed (``ui.state``) and validated where it is drawn: a bad
value shows its message right under the input, and the page gets ``None``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from lens_core.experiments.views.predictions import PredictionsRequest, predictions
from ui import state
from ui.derive_contrast import derive_corrupted_prompt, wrong_answer_guess  # noqa: F401  (re-exported)
from ui.errors import USER_FACING, log, md_escape, message_for
from ui.notices import SPREAD_DEPTH, bos_note, not_one_token_message, starts_with_bos
from ui.model import load_model, run_experiment
from ui.settings import Settings, get_settings

CONTEXT_KEY = "_circuit_explorer_context"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
PRESETS_FILE = Path(__file__).resolve().parent.parent / "lens_core" / "default_model" / "presets.json"

# The classic workflows, offered when a GPT-2 model is loaded.
GPT2_PRESETS = [
    {"name": "IOI", "prompt": "When John and Mary went to the store, Mary gave a bottle to",
     "answer": " John", "wrong_answer": " Mary", "page": "all",
     "corrupted_prompt": "When John and Mary went to the store, John gave a bottle to"},
    {"name": "Eiffel Tower", "prompt": "The Eiffel Tower is in the city of",
     "answer": " Paris", "wrong_answer": " London", "page": "all"},
]


@dataclasses.dataclass
class AppContext:
    """What the sidebar decided this run; pages read it with :func:`app_context`."""

    settings: Settings
    model_name: str
    dtype: str
    device: str
    model: Any = None
    model_error: str | None = None
    prompt: str = ""
    tokens: torch.Tensor | None = None  # [1, pos]
    prompt_error: str | None = None

    def require_model(self) -> Any:
        if self.model is None:
            st.info("Pick a model that loads (see the message in the sidebar).", icon=":material/info:")
            st.stop()
        return self.model

    def require_prompt(self) -> tuple[Any, torch.Tensor]:
        model = self.require_model()
        if self.tokens is None:
            st.info("Fix the prompt in the sidebar to see this page.", icon=":material/info:")
            st.stop()
        return model, self.tokens


def app_context() -> AppContext:
    ctx = st.session_state.get(CONTEXT_KEY)
    if ctx is None:  # a page run on its own (not through app.py): draw the sidebar here
        ctx = sidebar()
    return ctx


# -- validation ----------------------------------------------------------------------
def count_tokens(model: Any, text: str) -> int:
    """How many tokens the app runs for ``text``: BOS included once (see :func:`starts_with_bos`)."""
    once = 1 if starts_with_bos(model, text) else 0
    try:
        return int(model.to_tokens(text, truncate=False).shape[-1]) - once
    except ValueError as too_long:  # lens_core's PromptTooLongError carries the count
        if getattr(too_long, "n_tokens", None) is None:
            raise
        return int(too_long.n_tokens) - once
    except TypeError:  # a to_tokens without the truncate option
        return int(model.to_tokens(text).shape[-1]) - once


def validate_prompt(model: Any, text: str, settings: Settings) -> tuple[torch.Tensor | None, str | None]:
    """(tokens [1, pos], None) or (None, message for the user)."""
    if not text.strip():
        return None, "Enter a prompt: it is empty."
    n_tokens = count_tokens(model, text)
    cap = min(settings.max_prompt_tokens, int(model.cfg.n_ctx))
    if n_tokens > cap:
        why = "this server's cap" if settings.max_prompt_tokens <= model.cfg.n_ctx else "the model's context length"
        return None, f"The prompt is {n_tokens} tokens long; the limit is {cap} ({why}). Shorten it."
    if starts_with_bos(model, text):  # the typed BOS is the one the model gets: not twice
        return model.to_tokens(text, prepend_bos=False), None
    return model.to_tokens(text), None


def prompt_input(label: str, key: str, model: Any, default: str = DEFAULT_PROMPT, where=st, area: bool = True,
                 settings: Settings | None = None) -> tuple[str, torch.Tensor | None]:
    """A URL-backed prompt box; returns (text, tokens or None). The error shows under the box."""
    settings = settings or get_settings()
    widget = state.text_area if area else state.text_input
    text = widget(label, key=key, default=default, where=where)
    if model is None:
        return text, None
    tokens, error = validate_prompt(model, text, settings)
    if error:
        where.error(md_escape(error), icon=":material/error:")
    elif (note := bos_note(model, text)) is not None:
        where.info(md_escape(note), icon=":material/info:")
    return text, tokens


def answer_token_input(label: str, key: str, model: Any, default: str = "", where=st,
                       optional: bool = False) -> tuple[str, int | None]:
    """A URL-backed single-token answer box; returns (text, token id or None), message under the box.
    ``optional``: empty is allowed (``None`` with no message)."""
    help_text = "Must be exactly one token; mind the leading space (' Paris', not 'Paris')."
    text = state.text_input(label, key=key, default=default, where=where,
                            help=("Optional. " + help_text) if optional else help_text)
    if not text:
        if not optional:
            where.error("Enter an answer token: it is empty.", icon=":material/error:")
        return text, None
    try:
        return text, int(model.to_single_token(text))
    except (ValueError, KeyError, AssertionError):
        where.error(md_escape(not_one_token_message(model, text)), icon=":material/error:")
        return text, None


# -- presets -------------------------------------------------------------------------
EXAMPLE_KEY = "_example_prompt"  # session_state: the example prompt last offered (to follow a model change)


def example_prompt(model_name: str) -> str:
    """The prompt a first visit opens on: the model's first preset (the bundled model's induction sequence), else a
    general English sentence."""
    presets = load_presets(model_name)
    return str(presets[0]["prompt"]) if presets and presets[0].get("prompt") else DEFAULT_PROMPT


def load_presets(model_name: str) -> list[dict]:
    presets: list[dict] = []
    if model_name == "default" and PRESETS_FILE.exists():
        try:
            presets = [p for p in json.loads(PRESETS_FILE.read_text(encoding="utf-8")) if isinstance(p, dict) and "name" in p]
        except (OSError, ValueError):
            presets = []
    if "gpt2" in model_name.lower():
        presets += GPT2_PRESETS
    return presets


def preset_picker(page: str, fields: dict[str, str], ctx: AppContext, where=st, *, extra_pages: tuple = (),
                  derive=None) -> None:
    """Buttons that fill this page's inputs from a preset.

    ``fields`` maps a preset field (``prompt``, ``answer``, ``wrong_answer``, ...) to the
    URL/widget key it sets. Presets whose ``page`` is this page, one of ``extra_pages``
    or ``"all"`` are offered. ``derive(preset) -> preset or None`` may fill in fields a
    preset lacks (e.g. a corrupted prompt); a preset it returns ``None`` for is not offered.
    """
    presets = [p for p in load_presets(ctx.model_name) if p.get("page", "all") in (page, "all", *extra_pages)]
    if derive is not None:
        presets = [d for d in (derive(dict(p)) for p in presets) if d is not None]
    if not presets:
        return

    def apply(preset: dict) -> None:
        for field, key in fields.items():
            if field in preset and preset[field] is not None:
                state.set_value(key, preset[field])

    cols = where.columns(min(len(presets), 4) + 1)
    cols[0].markdown("**Presets**")
    for i, preset in enumerate(presets):
        cols[1 + i % 4].button(str(preset["name"]), key=f"preset_{page}_{i}", on_click=apply, args=(preset,),
                               help=md_escape(str(preset.get("prompt", ""))))


# -- the sidebar ---------------------------------------------------------------------
def _device_options(settings: Settings) -> list[str]:
    options = [d for d in settings.devices if d != "cuda" or torch.cuda.is_available()]
    options = [d for d in options if d != "mps" or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())]
    return options or ["cpu"]


def sidebar(settings: Settings | None = None) -> AppContext:
    """Draw the sidebar, load the model, validate the prompt; remember the result for the pages."""
    settings = settings or get_settings()
    side = st.sidebar
    side.header("Model")

    requested = st.query_params.get("model")
    first_run = "model" not in st.session_state
    custom_default = ""
    if first_run and requested and requested not in settings.model_allowlist:
        if settings.arbitrary_models_allowed:
            custom_default = requested
        # The model box starts on the default; refused, that is said (and kept) like any ignored link value.
        allowed = list(settings.model_allowlist)
        st.session_state["model"] = settings.default_model if settings.default_model in allowed else allowed[0]
        if not settings.arbitrary_models_allowed:
            state.note_ignored("model", requested, "this server does not allow that model", st.session_state["model"],
                               where=side)
    name = state.selectbox("Model", settings.model_allowlist, key="model", default=settings.default_model, where=side)
    if settings.arbitrary_models_allowed:
        if "custom_model" not in st.session_state and custom_default:
            st.session_state["custom_model"] = custom_default
        custom = state.text_input("Or any model (hub name or local path)", key="custom_model", default="", where=side,
                                  help="Leave empty to use the model picked above.").strip()
        if custom:
            name = custom
            _write_model_param(name)
    dtype = state.selectbox("dtype", settings.dtypes, key="dtype", default=settings.dtypes[0], where=side)
    device = state.selectbox("Device", _device_options(settings), key="device", where=side)

    ctx = AppContext(settings=settings, model_name=name, dtype=dtype, device=device)
    if not settings.model_allowed(name):
        ctx.model_error = f"Model {name!r} is not allowed on this server."
    else:
        try:
            ctx.model = load_model(name, dtype, device, settings)
        except Exception as exc:  # noqa: BLE001 - any load failure is a message, not a crash
            if isinstance(exc, USER_FACING):
                log.warning("loading %s failed: %s", name, exc)
            else:
                log.exception("loading %s failed", name)
            ctx.model_error = f"Could not load {name!r}: " + message_for(exc, "loading the model")
    if ctx.model_error:
        side.error(md_escape(ctx.model_error), icon=":material/error:")
    else:
        cfg = ctx.model.cfg
        side.caption(f"{cfg.n_layers} layers · {cfg.n_heads} heads · d_model {cfg.d_model} · vocab {cfg.d_vocab} · context {cfg.n_ctx}")

    side.header("Prompt")
    example = example_prompt(name)
    shown = st.session_state.get(EXAMPLE_KEY)
    if shown is not None and shown != example and st.session_state.get("prompt") == shown:
        # Another model: its own example replaces the last one's (a prompt the user typed is kept).
        state.set_value("prompt", example)
        side.caption(md_escape(f"Switched the prompt to {name}'s example."))
    st.session_state[EXAMPLE_KEY] = example
    ctx.prompt, ctx.tokens = prompt_input("Prompt", key="prompt", model=ctx.model, where=side, settings=settings,
                                          default=example)
    if ctx.model is None:
        ctx.prompt_error = ctx.model_error
    elif ctx.tokens is None:
        ctx.prompt_error = "invalid prompt"
    st.session_state[CONTEXT_KEY] = ctx
    return ctx


def _write_model_param(name: str) -> None:
    # The URL's "model" names the model in use, including a free-text one.
    if st.query_params.get("model") != name:
        st.query_params["model"] = name


def value_presets(page: str, presets: list[dict], where=st) -> None:
    """Page-specific preset buttons that set URL-backed inputs directly.

    Each preset is ``{"name": ..., "values": {key: value, ...}, "help": ...}``; the button
    keys start with ``preset_`` (as :func:`preset_picker`'s) so preset tests find them.
    """
    if not presets:
        return

    def apply(values: dict) -> None:
        for key, value in values.items():
            state.set_value(key, value)

    cols = where.columns(min(len(presets), 4) + 1)
    cols[0].markdown("**Page presets**")
    for i, preset in enumerate(presets):
        cols[1 + i % 4].button(str(preset["name"]), key=f"preset_{page}_page_{i}", on_click=apply,
                               args=(dict(preset["values"]),), help=preset.get("help"))


# -- inputs for answer-token experiments (logit lens, DLA, patching) -----------------------
def optional_token_input(label: str, key: str, model: Any, default: str = "", where=st) -> tuple[str, int | None]:
    """Like :func:`answer_token_input`, but empty is allowed (returns ``None`` with no message)."""
    return answer_token_input(label, key, model, default, where, optional=True)


@torch.inference_mode()
def answer_pair_inputs(model: Any, tokens: torch.Tensor, guesses: list[str] | None = None) -> tuple[str, int | None, str, int | None]:
    """The answer and optional wrong-answer inputs side by side (URL keys ``answer``, ``wrong_answer``):
    (answer text, id, wrong text, id or None). On a first visit they default to ``guesses``, else to
    the model's two likeliest next tokens, so the page shows something at once."""
    if guesses is None:
        fresh = not {"answer", "wrong_answer"} <= set(st.session_state)
        guesses = answer_pair_guesses(model, tokens) if fresh else []
    guesses = list(guesses) + [""] * (2 - len(guesses))
    cols = st.columns(2)
    answer_text, answer = answer_token_input("Answer token", key="answer", model=model, default=guesses[0], where=cols[0])
    wrong_text, wrong = optional_token_input("Wrong-answer token (empty: the answer's logit alone)", key="wrong_answer",
                                             model=model, default=guesses[1], where=cols[1])
    if answer is not None and answer == wrong:
        st.warning(md_escape(f"The answer and the wrong answer are the same token ({answer_text!r}): their logit "
                             "difference is 0 by definition, so every value below is 0. Pick another wrong answer, "
                             "or clear it to see the answer's logit alone."), icon=":material/warning:")
    return answer_text, answer, wrong_text, wrong


GUESS_DEPTH = SPREAD_DEPTH  # how far down the ranking to look for guesses (the same cached request as the gap check)


def answer_pair_guesses(model: Any, tokens: torch.Tensor) -> list[str]:
    """[answer, wrong answer] defaults: the likeliest next token, and the likeliest other one spelled the same way
    (leading space or not: ``ui.derive_contrast.wrong_answer_guess``)."""
    guesses = next_token_guesses(model, tokens, 8)
    if not guesses:
        return []
    wrong = wrong_answer_guess(model, guesses[0], guesses[1:])
    return [guesses[0], wrong] if wrong else [guesses[0]]


def next_token_guesses(model: Any, tokens: torch.Tensor, k: int = 2) -> list[str]:
    """The model's ``k`` most likely next tokens after the prompt, as strings (defaults for answer inputs).

    Read from the cached ``predictions`` experiment (so the forward pass is counted in the device's
    run slots and done once per prompt). Skipped: a string that does not encode back to its own
    single token (a partial UTF-8 byte), and whitespace-only or multi-line ones, which a one-line
    text box cannot show or hold.
    """
    request = PredictionsRequest(tokens=tuple(int(t) for t in tokens[0].tolist()), top_k=GUESS_DEPTH)
    result = run_experiment(model, "predictions", predictions, request)
    guesses = []
    for token_id, text in zip(result.top_token_ids[-1].tolist(), result.top_tokens[-1]):
        if not text.strip() or "\n" in text or "\r" in text:
            continue
        try:
            if int(model.to_single_token(text)) == token_id:
                guesses.append(text)
        except (ValueError, KeyError, AssertionError):
            continue
        if len(guesses) == k:
            break
    return guesses
