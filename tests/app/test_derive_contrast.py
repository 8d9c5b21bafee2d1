"""ui.derive_contrast: derived corrupted prompts keep words whole, derived wrong answers are spelled like the answer."""

from __future__ import annotations

import json

import pytest

from app_testkit import REPO_ROOT, errors, open_page
from ui.widgets import derive_corrupted_prompt  # re-exported from ui.derive_contrast

PRESETS = json.loads((REPO_ROOT / "lens_core" / "default_model" / "presets.json").read_text())
INDUCTION = PRESETS[0]["prompt"]


def one_word_changed(clean: str, corrupted: str) -> tuple[str, str]:
    """(the clean word, its replacement) when the two texts differ in exactly one whitespace-separated word."""
    a, b = clean.split(), corrupted.split()
    assert len(a) == len(b), f"words glued or split: {clean!r} -> {corrupted!r}"
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(changed) == 1, changed
    return changed[0]


@pytest.fixture(scope="module")
def bundled_model():
    from lens_core import HookedTransformer

    return HookedTransformer.from_pretrained("default")


def test_a_wrong_answer_without_the_answers_space_is_respaced_not_glued(bundled_model):
    # The model's second guess after the induction prompt is "case" (no space) while the answer is " example":
    # replacing " example" by "case" gave "... stdout noncase useful ...".
    corrupted = derive_corrupted_prompt(bundled_model, INDUCTION, " example", "case")
    assert one_word_changed(INDUCTION, corrupted) == ("example", "case")
    assert len(bundled_model.to_tokens(corrupted)[0]) == len(bundled_model.to_tokens(INDUCTION)[0])


@pytest.mark.parametrize("preset", PRESETS, ids=[p["name"][:30] for p in PRESETS])
def test_every_bundled_preset_derives_a_one_word_corruption(bundled_model, preset):
    corrupted = derive_corrupted_prompt(bundled_model, preset["prompt"], preset.get("answer"), preset.get("wrong_answer"))
    if corrupted is None:
        return  # no same-length whole-word replacement exists: the page says so and offers no default
    clean_word, new_word = one_word_changed(preset["prompt"], corrupted)
    assert len(bundled_model.to_tokens(corrupted)[0]) == len(bundled_model.to_tokens(preset["prompt"])[0])


def test_gpt2_style_tokenizer_keeps_words_whole(model):
    clean = "When Mary and John went to the store, John gave a drink to"
    # The wrong answer typed without its space: the answer's occurrence " Mary" becomes " John".
    assert derive_corrupted_prompt(model, clean, " Mary", "John") == "When John and John went to the store, John gave a drink to"
    # No answer: a repeated whole word is replaced by another whole word of the prompt ("Marynd" before: " a" of " and").
    corrupted = derive_corrupted_prompt(model, clean)
    one_word_changed(clean, corrupted)
    assert len(model.to_tokens(corrupted)[0]) == len(model.to_tokens(clean)[0])


def test_the_wrong_answer_guess_follows_the_answers_spelling(bundled_model):
    from ui.derive_contrast import wrong_answer_guess

    guesses = [" example", "case", "quence", " sequences", " useful"]  # the model's ranking after the induction prompt
    assert wrong_answer_guess(bundled_model, " example", guesses) == " sequences"
    # No guess spelled like the answer: the likeliest other one, re-spaced when that is a token.
    assert wrong_answer_guess(bundled_model, " example", [" example", "case"]) == " case"
    # (it is one token of the vocabulary, which spells back as " case": the re-spacing made a real token)
    assert bundled_model.to_string([int(bundled_model.to_single_token(" case"))]) == " case"
    assert wrong_answer_guess(bundled_model, "data", ["data", " self", "self"]) == "self"
    assert wrong_answer_guess(bundled_model, "data", ["data"]) == ""


def test_contrast_page_opens_on_a_readable_pair(bundled_settings):
    """A prompt without answers: the page's defaults are the model's guesses and a corruption derived from them."""
    at = open_page("app_pages/6_Activation_patching.py", prompt=INDUCTION)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    answer, wrong = at.text_input(key="answer").value, at.text_input(key="wrong_answer").value
    assert answer.startswith(" ") and wrong.startswith(" ") and wrong != answer, (answer, wrong)
    corrupted = at.text_input(key="corrupted").value
    assert one_word_changed(INDUCTION, corrupted)[1] == wrong.strip()
