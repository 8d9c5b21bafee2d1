"""ui.link_store: links the app writes stay far below the server's request limit; long state is kept server-side
under a short id, read back on open, and an unknown id is a message in words."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from app_testkit import errors, open_link, open_page
from ui import links
from ui.link_store import MAX_QUERY_CHARS, STATE_PARAM, compact, load_state, query_length, save_state

WORDS = "descriptor provided sequences iterable example stdout"
CLEAN = " ".join([WORDS] * 18)  # about 110 tokens, 1,000 characters
CORRUPTED = CLEAN.replace("example", "useful", 1)


@pytest.fixture
def store(tmp_path):
    from cache_store import ResultStore

    with ResultStore(tmp_path / "store", size_limit_bytes=2**24) as s:
        yield s


def test_short_state_is_left_in_the_link(store):
    params = {"prompt": "a b c", "layer": "1"}
    assert compact(params, store=store) == params


def test_long_state_round_trips_through_a_short_id(store):
    params = {"prompt": CLEAN, "corrupted": CORRUPTED, "layer": "1", "from_link": "1", "note": "<b>&amp;\"'"}
    assert query_length(params) > MAX_QUERY_CHARS
    short = compact(params, keep=("from_link",), store=store)
    assert query_length(short) <= MAX_QUERY_CHARS
    assert short["layer"] == "1" and short["from_link"] == "1" and len(short[STATE_PARAM]) == 16
    saved, problem = load_state(short[STATE_PARAM], store=store)
    assert problem is None
    assert {**{k: v for k, v in short.items() if k != STATE_PARAM}, **saved} == params  # nothing lost or changed
    assert compact(params, keep=("from_link",), store=store) == short  # the same view, the same id


def test_unknown_bad_and_foreign_ids_are_refused_in_words(store):
    values, problem = load_state("0123456789abcdef", store=store)
    assert values is None and "not on this server any more" in problem
    values, problem = load_state("../../etc/passwd", store=store)
    assert values is None and "not an id this app writes" in problem
    store.put_bytes("link-state/00000000000000aa", b'{"schema": "other", "params": {"a": 1}}')
    values, problem = load_state("00000000000000aa", store=store)
    assert values is None and "could not be read" in problem
    assert save_state({"prompt": "x" * 400_000}, store=store) is None  # too big to keep: the link stays as it is


def test_an_open_in_link_with_long_prompts_is_short_and_opens_on_them(bundled_settings):
    """Issue 23: a link longer than the server accepts got a bare "Invalid HTTP request received." page."""
    params = links.link_params(None, prompt=CLEAN, corrupted=CORRUPTED, answer=" example", wrong_answer=" useful")
    assert query_length(params) <= MAX_QUERY_CHARS and STATE_PARAM in params
    at = open_link(params, "Activation_patching", timeout=300)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.sidebar.text_area(key="prompt").value == CLEAN
    assert at.text_input(key="corrupted").value == CORRUPTED
    # The address bar (what a user copies) is short too, and reopens the same view.
    shown = {k: at.query_params[k] for k in at.query_params}
    shown = {k: v[0] if isinstance(v, list) else v for k, v in shown.items()}
    assert query_length(shown) <= MAX_QUERY_CHARS and STATE_PARAM in shown
    again = open_page("app_pages/6_Activation_patching.py", **shown)
    assert not again.exception and again.text_input(key="corrupted").value == CORRUPTED


def test_a_link_with_an_unknown_id_says_so_and_opens(bundled_settings):
    from streamlit.testing.v1 import AppTest

    from app_testkit import APP

    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params[STATE_PARAM] = "0123456789abcdef"
    at.switch_page("app_pages/1_Prompt_and_predictions.py")
    at.run()  # the first run of a session, as a browser opening the link
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "not on this server any more" in warnings, warnings
    assert errors(at) == []
