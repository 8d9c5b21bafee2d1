""""Open in <page>" links that carry state (prompt, model, head, edge, feature) from one page to another.

A link is an ``st.page_link`` to the target page with the state in its query string, the same keys the
target page's URL-backed widgets read (``ui.state``). Opened in a new tab it is a fresh session, which
reads the URL as any pasted link. Followed in the same session, the session already holds values for
those keys (a widget reads the URL only on a session's first run); the marker ``LINK_PARAM`` in the query
string makes :func:`take_link_state` (called in app.py before the sidebar draws) drop them, so the link's values go
through the same checks and notices as a pasted link.

Pages are looked up by their title words (``"Attention"``, ``"Browse_examples"``), never by their number,
so renumbering ``app_pages/`` does not break a link: :func:`page_file` is the one place that knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent.parent / "app_pages"
LINK_PARAM = "from_link"  # marks a run reached through an "Open in" link followed in the same session
SHARED_KEYS = ("model", "dtype", "prompt")  # the sidebar's state, carried by every link


def page_file(title_words: str) -> str:
    """The page script whose file name ends in ``_<title_words>.py`` (any number, any section folder), relative to the
    app's root as ``st.page_link`` and ``st.switch_page`` take it."""
    matches = sorted(p for p in PAGES_DIR.rglob(f"[0-9]*_{title_words}.py"))
    if not matches:
        raise LookupError(f"no page named {title_words!r} in {PAGES_DIR}")
    return str(matches[0].relative_to(PAGES_DIR.parent))


def _text(value: Any) -> str:
    """A query-string value as ``ui.state`` reads it back."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def link_params(ctx: Any = None, **params: Any) -> dict[str, str]:
    """The query string of a link: the sidebar's model, dtype and prompt (from ``ctx``), then ``params`` (``None``
    values left out), then the marker; past ``ui.link_store.MAX_QUERY_CHARS`` the long values are saved
    server-side and the link carries ``state=<id>``."""
    out: dict[str, str] = {}
    if ctx is not None:
        out.update(model=str(ctx.model_name), dtype=str(ctx.dtype), prompt=str(ctx.prompt))
    out.update({key: _text(value) for key, value in params.items() if value is not None})
    out[LINK_PARAM] = "1"
    from ui.link_store import compact  # a link too long for the server: its long values kept under a short id

    return compact(out, keep=(LINK_PARAM,))


def take_link_state() -> None:
    """On the first run after an in-session "Open in" link: forget the session's values of the link's keys, so the
    widgets read the link's (and check them, as for a pasted link). Call before any URL-backed widget is drawn."""
    if st.query_params.get(LINK_PARAM) is None:
        return
    from ui.state import NOTICES_KEY

    notices = st.session_state.get(NOTICES_KEY) or {}
    for key in list(st.query_params.keys()):
        if key != LINK_PARAM:
            st.session_state.pop(key, None)
            notices.pop(key, None)
    del st.query_params[LINK_PARAM]


def open_in(where, title_words: str, label: str, ctx: Any = None, *, help: str | None = None, **params: Any) -> None:
    """An "Open in" link to the page ``title_words`` with ``params`` (and the sidebar's state from ``ctx``)."""
    where.page_link(page_file(title_words), label=label, query_params=link_params(ctx, **params), help=help,
                    icon=":material/open_in_new:")


# -- the objects pages show, and where each opens -------------------------------------------------
def head_targets(layer: int, head: int, **extra: Any) -> list[tuple[str, str, dict]]:
    """(page, label, params) of every page that shows one head: its pattern, its ablation, its examples."""
    name = f"L{layer}H{head}"
    return [
        ("Attention", f"{name}'s attention", {"layer": layer, "head": head}),
        ("Ablation", f"Ablate {name}", {"ablate": [name], **{k: v for k, v in extra.items() if k in ("answer", "wrong_answer")}}),
        ("Browse_examples", f"{name} over a corpus", {"component": name}),
    ]


def head_links(where, ctx: Any, layer: int, head: int, *, caption: str | None = None, **extra: Any) -> None:
    """A row of links for one head: Attention, Ablation, Browse examples."""
    targets = head_targets(layer, head, **extra)
    cols = where.columns(len(targets) + 1)
    cols[0].caption(caption or f"Open L{layer}H{head} in:")
    for col, (page, label, params) in zip(cols[1:], targets):
        open_in(col, page, label, ctx, **params)


def _head(label: str) -> tuple[int, int] | None:
    if not label.startswith("L") or "H" not in label:
        return None
    try:
        layer, head = label[1:].split("H")
        return int(layer), int(head)
    except ValueError:
        return None


def edge_params(sender: str, receiver: str) -> dict | None:
    """Path-patching state for an edge of the edge graph (``L0H1`` → ``L1H3.k`` or → ``logits``), or ``None`` for an
    edge path patching cannot isolate (from the embeddings or an MLP, into an MLP, or between key/value groups)."""
    sent = _head(sender)
    if sent is None:
        return None
    if receiver == "logits":
        return {"sender_mode": "chosen", "senders": [sender], "receiver_mode": "resid_final"}
    name, _, kind = receiver.partition(".")
    got = _head(name)
    if got is None or kind not in ("q", "k", "v") or got[0] <= sent[0]:
        return None
    return {"sender_mode": "chosen", "senders": [sender], "receiver_mode": "heads", "receivers": [name],
            "recv_inputs": [kind]}


def edge_link(where, ctx: Any, sender: str, receiver: str, *, contrast: dict | None = None) -> bool:
    """A link to Path patching for one edge, carrying the clean/corrupted pair in ``contrast`` (``corrupted``,
    ``answer``, ``wrong_answer``). False (and a caption saying why) when path patching cannot take the edge."""
    params = edge_params(sender, receiver)
    if params is None:
        where.caption(f"{sender} → {receiver}: path patching takes edges from a head to a later head's query, key or "
                      "value, or to the logits.")
        return False
    open_in(where, "Path_patching", f"Path-patch {sender} → {receiver}", ctx, **params, **(contrast or {}))
    return True


def feature_link(where, ctx: Any, layer: int, index: int, label: str | None = None) -> None:
    """A link to the Features page's dashboard and steering of one transcoder feature."""
    open_in(where, "Features", label or f"L{layer}#{index} on the Features page", ctx, unit_kind="feature",
            unit_layer=layer, unit_index=index)
