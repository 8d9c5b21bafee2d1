"""Helpers shared by the app tests (a plain module: test files import it by name)."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = str(REPO_ROOT / "app.py")


def plotly_figure(at, key: str) -> dict:
    """The figure JSON of the plotly chart drawn with ``key``."""
    for element in at.get("plotly_chart"):
        proto = element.proto
        if key in (proto.id or "") or key in json.dumps(getattr(proto, "form_id", "")):
            return json.loads(proto.spec)
    raise AssertionError(f"no plotly chart with key {key!r}; found {[e.proto.id for e in at.get('plotly_chart')]}")


def plotly_array(value):
    """A figure JSON array as numpy: plain lists, or plotly's typed-array form {dtype, bdata, shape}."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(s) for s in str(shape).split(",")])
        return array.astype(float)
    return np.array([[float("nan") if v is None else v for v in row] if isinstance(row, list) else row for row in value],
                    dtype=float)


def open_page(page: str, **query) -> AppTest:
    """Run the app with ``query`` as the URL's query string, then switch to ``page``."""
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page)
    at.run()
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error] + [e.value for e in at.sidebar.error]


def prompt_ids(model, text: str) -> tuple[int, ...]:
    """The prompt's token ids as the pages send them to lens_core (with the model's BOS, as ``to_tokens``)."""
    return tuple(int(t) for t in model.to_tokens(text)[0].tolist())


def one_line_guesses(tok, scores, k):
    """The k most likely next tokens that a one-line text box can hold (not blank, no newline), as ids."""
    out = []
    for i in scores.argsort(descending=True).tolist():
        text = tok.decode([i])
        if text.strip() and "\n" not in text and "\r" not in text and tok.encode(text, add_special_tokens=False) == [i]:
            out.append(i)
        if len(out) == k:
            return out


def hf_logits(model_dir, prompt: str):
    """(tokenizer, ``transformers``' logits [pos, vocab] in float64) for BOS + ``prompt``: the reference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        return tok, hf(torch.tensor([ids])).logits[0].double()


def assert_message_and_no_chart(at, message: str, in_sidebar: bool = False) -> None:
    """The page ran, shows ``message`` in an error (in the sidebar's, if ``in_sidebar``), and draws no chart."""
    assert not at.exception
    shown = [e.value for e in at.sidebar.error] if in_sidebar else errors(at)
    assert any(message in m for m in shown), shown
    assert len(at.get("plotly_chart")) == 0


def open_link(params: dict, page_title_words: str, timeout: int = 180) -> AppTest:
    """Open the app on a link's query parameters, then go to the page the link names (as a click does)."""
    from ui import links

    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(links.page_file(page_title_words))
    at.run()
    return at


def assert_says_no_transcoders(page: str) -> None:
    """On a model without transcoders, ``page`` warns that none are bundled, with no error."""
    at = open_page(page, prompt="the cat sat on the mat")
    assert not at.exception, [e.value for e in at.exception]
    assert any("no transcoders are bundled" in w.value for w in at.warning)
    assert errors(at) == []
