"""Widgets whose value lives in the URL query string, so a pasted link reproduces the view.

Each helper wraps one Streamlit widget under a ``key`` that is also the query
parameter name. On the first run of a session (the key is not yet in
``st.session_state``) the value comes from ``st.query_params[key]`` when that
parses and is allowed, else from ``default``. After the widget is drawn its
value is written back to ``st.query_params``. Keys mean the same thing on every
page (``layer`` is always a layer index), so keep them short and reuse them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st


def _from_url(key: str, parse: Callable[[str], Any], default: Any) -> Any:
    raw = st.query_params.get(key)
    if raw is None:
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError):
        return default


def _init(key: str, parse: Callable[[str], Any], default: Any, valid: Callable[[Any], bool] = lambda v: True) -> None:
    if key not in st.session_state:
        value = _from_url(key, parse, default)
        st.session_state[key] = value if valid(value) else default
    else:
        # Re-assigning makes the value the session's own, not the last widget's: Streamlit then keeps it
        # when another page draws a widget under the same key (it would reset it to the widget's default).
        st.session_state[key] = st.session_state[key]


def _write(key: str, value: Any) -> None:
    if isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "1" if value else "0"
    else:
        text = str(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def set_value(key: str, value: Any) -> None:
    """Set a URL-backed widget's value from a callback (e.g. a preset button)."""
    st.session_state[key] = value
    _write(key, value)


def text_input(label: str, key: str, default: str = "", where=st, **kwargs) -> str:
    _init(key, str, default)
    value = where.text_input(label, key=key, **kwargs)
    _write(key, value)
    return value


def text_area(label: str, key: str, default: str = "", where=st, **kwargs) -> str:
    _init(key, str, default)
    value = where.text_area(label, key=key, **kwargs)
    _write(key, value)
    return value


def selectbox(label: str, options: Sequence[Any], key: str, default: Any = None, where=st, parse=str, **kwargs) -> Any:
    options = list(options)
    default = options[0] if default is None or default not in options else default
    _init(key, parse, default, lambda v: v in options)
    if st.session_state[key] not in options:  # options changed (e.g. another model): fall back
        st.session_state[key] = default
    value = where.selectbox(label, options, key=key, **kwargs)
    _write(key, value)
    return value


def radio(label: str, options: Sequence[Any], key: str, default: Any = None, where=st, parse=str, **kwargs) -> Any:
    options = list(options)
    default = options[0] if default is None or default not in options else default
    _init(key, parse, default, lambda v: v in options)
    if st.session_state[key] not in options:
        st.session_state[key] = default
    value = where.radio(label, options, key=key, **kwargs)
    _write(key, value)
    return value


def int_slider(label: str, min_value: int, max_value: int, key: str, default: int | None = None, where=st, **kwargs) -> int:
    default = min_value if default is None else min(max(default, min_value), max_value)
    _init(key, int, default, lambda v: min_value <= v <= max_value)
    if not min_value <= st.session_state[key] <= max_value:
        st.session_state[key] = default
    if min_value == max_value:  # st.slider refuses an empty range
        where.caption(f"{label}: {min_value}")
        _write(key, min_value)
        return min_value
    value = where.slider(label, min_value=min_value, max_value=max_value, key=key, **kwargs)
    _write(key, value)
    return value


def int_input(label: str, min_value: int, max_value: int, key: str, default: int | None = None, where=st, **kwargs) -> int:
    default = min_value if default is None else min(max(default, min_value), max_value)
    _init(key, int, default, lambda v: min_value <= v <= max_value)
    if not min_value <= st.session_state[key] <= max_value:
        st.session_state[key] = default
    value = where.number_input(label, min_value=min_value, max_value=max_value, step=1, key=key, **kwargs)
    _write(key, int(value))
    return int(value)


def checkbox(label: str, key: str, default: bool = False, where=st, **kwargs) -> bool:
    _init(key, _parse_bool, default)
    value = where.checkbox(label, key=key, **kwargs)
    _write(key, value)
    return value


def multiselect(label: str, options: Sequence[Any], key: str, default: Sequence[Any] = (), where=st, parse=str, **kwargs) -> list:
    options = list(options)
    default = [d for d in default if d in options]

    def parse_list(raw: str) -> list:
        return [parse(part) for part in raw.split(",") if part != ""]

    _init(key, parse_list, default, lambda v: all(x in options for x in v))
    st.session_state[key] = [v for v in st.session_state[key] if v in options]
    value = where.multiselect(label, options, key=key, **kwargs)
    _write(key, value)
    return value
