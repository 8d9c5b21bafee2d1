"""Links stay short: state that does not fit in a link is kept server-side under a short id.

The app's server (uvicorn) refuses a request whose head passes about 64 KiB with a bare "Invalid HTTP request
received." page, and the deployment's proxy (``deploy/nginx.conf``) answers past 8 KiB. A long prompt or a
list of supernodes would get there. So every query string the app writes stays under
:data:`MAX_QUERY_CHARS`, far below both:

- "Open in" links (``ui.links.link_params``) go through :func:`compact`;
- the address bar (what a user copies to share) is compacted at the end of every run (:func:`compact_url`,
  called by app.py).

:func:`compact` moves the longest values into one JSON object, stored in the app's result store
(``cache_store``: the disk cache, or the Redis every replica shares) under the first 16 hex digits of its
SHA-256, and the link carries ``state=<id>``. The same view always gets the same id. :func:`expand_link_state`
(app.py, before any widget) puts the saved values back into the query string for the widgets to read
(values the link spells out itself win). JSON only, never pickle. Values come back as plain strings and go
through the same widget checks as any pasted link. An unknown or evicted id, or an entry that is not the JSON
written here, gives a message in words, and the page opens without it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping
from urllib.parse import urlencode

import streamlit as st

STATE_PARAM = "state"
MAX_QUERY_CHARS = 1500  # a link's query string, at most (the server takes about 64 KiB, the proxy 8 KiB)
MAX_SAVED_BYTES = 256 * 1024  # one saved state, at most (a 256-token prompt is a few KB)
KEY_PREFIX = "link-state/"
SCHEMA = "circuit-explorer/link-state@1"
_ID = re.compile(r"^[0-9a-f]{16}$")


def query_length(params: Mapping[str, str]) -> int:
    """Characters of the query string as the browser sends it (percent-encoded)."""
    return len(urlencode(list(params.items())))


def _store():
    from ui.model import get_store

    return get_store()


def save_state(values: Mapping[str, str], store: Any = None) -> str | None:
    """Store ``values`` (str -> str) as JSON; their id, or None when they are too big to keep."""
    blob = json.dumps({"schema": SCHEMA, "params": dict(sorted(values.items()))}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    if len(blob) > MAX_SAVED_BYTES:
        return None
    state_id = hashlib.sha256(blob).hexdigest()[:16]
    store = store if store is not None else _store()
    if store.get_bytes(KEY_PREFIX + state_id) != blob:
        store.put_bytes(KEY_PREFIX + state_id, blob)
    return state_id


def load_state(state_id: str, store: Any = None) -> tuple[dict[str, str] | None, str | None]:
    """(the saved values, None), or (None, why not in words)."""
    shown = state_id if len(state_id) <= 40 else state_id[:37] + "…"
    if not _ID.match(state_id):
        return None, f"The link's saved view {shown!r} is not an id this app writes (16 hex digits); it was ignored."
    store = store if store is not None else _store()
    blob = store.get_bytes(KEY_PREFIX + state_id)
    if blob is None:
        return None, (f"The link's saved view ({state_id}) is not on this server any more: views too long for a link "
                      "are kept for a while, then make room for newer ones. The page opens with what the rest of the "
                      "link says.")
    try:
        data = json.loads(blob.decode("utf-8"))
        params = data["params"]
        if data.get("schema") != SCHEMA or not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise ValueError("not a saved link state")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return None, f"The link's saved view ({state_id}) could not be read; it was ignored."
    return params, None


def compact(params: Mapping[str, str], keep: tuple[str, ...] = (), store: Any = None) -> dict[str, str]:
    """``params`` if their query string fits :data:`MAX_QUERY_CHARS`; else the longest values (never those in
    ``keep``) saved server-side and replaced by ``state=<id>``. Unchanged when the state cannot be saved."""
    params = {k: str(v) for k, v in params.items()}
    if query_length(params) <= MAX_QUERY_CHARS:
        return params
    rest = {k: v for k, v in params.items() if k != STATE_PARAM}
    saved: dict[str, str] = {}
    room = MAX_QUERY_CHARS - len(f"&{STATE_PARAM}=") - 16
    for key in sorted((k for k in rest if k not in keep), key=lambda k: -len(urlencode({k: rest[k]}))):
        if query_length(rest) <= room:
            break
        saved[key] = rest.pop(key)
    state_id = save_state(saved, store) if saved else None
    if state_id is None:
        return params
    return {**rest, STATE_PARAM: state_id}


def expand_link_state() -> None:
    """On a run whose URL carries ``state=<id>``: the saved values into the query string (those the URL spells out
    itself win), or a message in words when the id is unknown. Call before any widget reads the URL."""
    state_id = st.query_params.get(STATE_PARAM)
    if state_id is None:
        return
    values, problem = load_state(str(state_id))
    del st.query_params[STATE_PARAM]
    if problem:
        from ui.errors import md_escape

        st.warning(md_escape(problem), icon=":material/link_off:")
        return
    for key, value in values.items():
        if key not in st.query_params:
            st.query_params[key] = value


def compact_url() -> None:
    """Keep the address bar's query string short (app.py, after the page ran): long values saved, ``state=<id>``."""
    current = st.query_params.to_dict()
    if query_length(current) <= MAX_QUERY_CHARS:
        return
    short = compact(current)
    if short == current:
        return
    st.query_params.from_dict(short)
