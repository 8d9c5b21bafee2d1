"""A readable corrupted prompt and a well-formed wrong answer, derived from the clean prompt and its answer.

Both work on tokens and keep words whole: a token is replaced only where it is a whole word of the prompt
(it starts a word and the next token does not continue it), by a whole-word token with the same leading-space
convention (``" John"`` for ``" Mary"``, ``"self"`` for ``"data"`` after ``"("``), so no two words are glued
together ("noncase") and no word is cut ("Marynd"). The wrong answer follows the answer's convention: a tokenizer
that writes " example" wants " sequences", not "sequences".
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


def _spaced(text: str) -> bool:
    return text[:1].isspace()


def _word(text: str) -> bool:
    """A word piece: letters, digits or underscores after an optional leading space."""
    core = text.lstrip(" ")
    return bool(core) and all(ch.isalnum() or ch == "_" for ch in core)


def _single(model: Any, text: Optional[str]) -> Optional[int]:
    try:
        return int(model.to_single_token(text)) if text else None
    except (ValueError, KeyError, AssertionError):
        return None


def with_spacing(model: Any, text: str, spaced: bool) -> Optional[str]:
    """``text`` with (``spaced``) or without a leading space, if that is one token of the model's vocabulary."""
    candidate = (" " + text.lstrip(" ")) if spaced else text.lstrip(" ")
    return candidate if candidate and _single(model, candidate) is not None else None


def wrong_answer_guess(model: Any, answer: str, guesses: Sequence[str]) -> str:
    """The likeliest guess other than ``answer`` with the answer's leading-space convention; else the likeliest other
    guess re-spaced to it when that is a token; else the likeliest other guess; "" when there is none."""
    others = [g for g in guesses if g != answer]
    same = [g for g in others if _spaced(g) == _spaced(answer) and _word(g) == _word(answer)]
    if same:
        return same[0]
    for g in others:
        respaced = with_spacing(model, g, _spaced(answer))
        if respaced and respaced != answer:
            return respaced
    return others[0] if others else ""


def derive_corrupted_prompt(model: Any, prompt: str, answer: str | None = None, wrong_answer: str | None = None) -> str | None:
    """A corrupted prompt with the same number of tokens as ``prompt``, or ``None`` when none is found.

    If the answer token is a whole word of the prompt, its first such occurrence becomes the wrong answer
    (spaced like the occurrence): the information the model could copy is gone. Otherwise the first whole word
    that the prompt repeats later has its first occurrence replaced by another whole word of the prompt with
    the same leading space, which breaks the repetition that induction and IOI-style circuits use.
    """
    try:
        ids = model.to_tokens(prompt)[0].tolist()
    except ValueError:  # longer than the context (PromptTooLongError): nothing to derive from
        return None
    start = 1 if getattr(model.cfg, "default_prepend_bos", False) else 0
    body = ids[start:]
    pieces = [model.to_string([t]) for t in body]

    def whole_word(i: int) -> bool:
        # A word starts after a space or a non-alphanumeric character (``get_`` + ``path`` is a word of its own) and
        # ends where the next token does not go on with letters or digits.
        starts = i == 0 or _spaced(pieces[i]) or not pieces[i - 1][-1:].isalnum()
        ends = i == len(body) - 1 or not pieces[i + 1][:1].isalnum()
        return _word(pieces[i]) and starts and ends

    def attempt(index: int, replacement: int) -> str | None:
        new = body[:index] + [replacement] + body[index + 1:]
        text = model.to_string(new)
        try:
            if text != prompt and model.to_tokens(text)[0].tolist() == ids[:start] + new:
                return text
        except ValueError:  # re-tokenized past the context: not a same-length prompt
            pass
        return None

    answer_id = _single(model, answer)
    if answer_id is not None and wrong_answer:
        for i, token in enumerate(body):
            if token != answer_id or not whole_word(i):
                continue
            respaced = with_spacing(model, wrong_answer, _spaced(pieces[i]))
            wrong_id = _single(model, respaced)
            if wrong_id is not None and wrong_id != token and _word(respaced):
                found = attempt(i, wrong_id)
                if found:
                    return found
            break  # the first whole-word occurrence only
    words = [i for i in range(len(body)) if whole_word(i)]
    for i in words:
        token = body[i]
        if token not in body[i + 1:]:
            continue
        for j in words:
            other = body[j]
            if other != token and _spaced(pieces[j]) == _spaced(pieces[i]):
                found = attempt(i, other)
                if found:
                    return found
    return None
