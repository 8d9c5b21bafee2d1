"""Widgets whose value lives in the URL query string, so a pasted link reproduces the view.

Each helper wraps one Streamlit widget under a ``key`` that is also the query
parameter name. On the first run of a session (the key is not yet in
``st.session_state``) the value comes from ``st.query_params[key]``, else from
``default``. After the widget is drawn its value is written back to
``st.query_params``. Keys mean the same thing on every page (``layer`` is always
a layer index), so keep them short and reuse them.

Nothing is replaced silently. A link's value that does not parse (``position=abc``)
or is not allowed (``layer=-1``, ``head=999``, ``top_k=0``, an unknown option) is
ignored: the widget uses the nearest valid value (an integer clamped into its
range; otherwise the default) and a warning under the widget names the ignored
value and why. The same happens when a value the session already holds stops
fitting (another model has fewer layers, a shorter prompt has fewer positions).
The warning stays while the widget keeps the substituted value and goes when the
user picks another. Pages get this by using these helpers; a page with its own
check calls :func:`note_ignored`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

from ui.errors import md_escape

NOTICES_KEY = "_url_state_notices"  # session_state: {key: (message, value used, already shown this run)}
GIVEN_KEY = "_url_state_given"  # session_state: {key: the value asked for that a live notice replaced}
NOTICE_ICON = ":material/warning:"
_MAX_LISTED = 8

# fix(value) -> (the value to use, why the given one is not usable or None when it is)
Fix = Callable[[Any], "tuple[Any, str | None]"]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "nothing"
    return str(value)


def _raw(text: Any) -> str:
    text = str(text)
    if len(text) > 60:
        text = text[:57] + "…"
    return text if text.isprintable() else repr(text)


def _listing(options: Sequence[Any]) -> str:
    shown = ", ".join(str(o) for o in list(options)[:_MAX_LISTED])
    return shown + (", …" if len(options) > _MAX_LISTED else "")


def _message(key: str, given: Any, why: str, used: Any, from_link: bool, nearest: bool) -> str:
    instead = f"{_show(used)} (the nearest valid value)" if nearest else _show(used)
    if from_link:
        return f"The link's {key}={_raw(given)} was ignored: {why}. Showing {instead} instead."
    return f"{key}={_raw(_show(given))} no longer fits: {why}. Showing {instead} instead."


def note_ignored(key: str, given: Any, why: str, used: Any, *, from_link: bool = True, nearest: bool = False,
                 where=st) -> None:
    """Show under ``where`` that ``key``'s value ``given`` was not used, why, and that ``used`` is shown instead.

    For a page's own checks. The helper drawing ``key`` repeats the notice on later runs while its value stays
    ``used`` (not on this run: it is shown here already).
    """
    message = _message(key, given, why, used, from_link, nearest)
    st.session_state.setdefault(NOTICES_KEY, {})[key] = (message, used, True)
    where.warning(md_escape(message), icon=NOTICE_ICON)


def _note(key: str, message: str, used: Any, where, given: Any = None) -> None:
    givens = st.session_state.setdefault(GIVEN_KEY, {})
    if given is not None and key not in (st.session_state.get(NOTICES_KEY) or {}):
        givens[key] = given  # the first value asked for, kept through later substitutions
    elif given is None:
        givens.pop(key, None)
    st.session_state.setdefault(NOTICES_KEY, {})[key] = (message, used, False)
    where.warning(md_escape(message), icon=NOTICE_ICON)


def _restore_given(key: str, value: Any, fix: Fix) -> Any:
    """The value asked for when a live notice replaced it and it fits again (another model or dictionary has the
    layer back), the notice then dropped; else ``value``."""
    notices, givens = st.session_state.get(NOTICES_KEY) or {}, st.session_state.get(GIVEN_KEY) or {}
    entry = notices.get(key)
    if entry is None or key not in givens or not _same(value, entry[1]):
        return value
    given = givens[key]
    if fix(given)[1] is not None:
        return value
    notices.pop(key, None)
    givens.pop(key, None)
    return given


def _show_notice(key: str, value: Any, where) -> None:
    """The notice recorded for ``key`` on an earlier run, while the widget still holds the substituted value."""
    notices = st.session_state.get(NOTICES_KEY) or {}
    entry = notices.get(key)
    if entry is None:
        return
    message, used, shown_this_run = entry
    if not _same(value, used):
        notices.pop(key, None)
    elif shown_this_run:
        notices[key] = (message, used, False)
    else:
        where.warning(md_escape(message), icon=NOTICE_ICON)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _resolve(key: str, parse: Callable[[str], Any], default: Any, fix: Fix | None = None, *, expect: str = "valid",
             where=st) -> None:
    """Put a usable value for ``key`` in the session: the link's on the first run, the session's after; notices as above."""
    fix = fix or (lambda v: (v, None))
    shown = False
    if key not in st.session_state:
        raw = st.query_params.get(key)
        value = default
        if raw is not None:
            try:
                parsed = parse(raw)
            except (ValueError, TypeError):
                _note(key, _message(key, raw, f"it is not {expect}", default, True, False), default, where)
                shown = True
            else:
                value, shown = _fixed(key, parsed, raw, fix, default, True, where)
        st.session_state[key] = value
    else:
        value = _restore_given(key, st.session_state[key], fix)
        fixed, shown = _fixed(key, value, value, fix, default, False, where)
        # Re-assigning makes the value the session's own, not the last widget's: Streamlit then keeps it
        # when another page draws a widget under the same key (it would reset it to the widget's default).
        st.session_state[key] = fixed
    if not shown:
        _show_notice(key, st.session_state[key], where)


def _fixed(key: str, given: Any, shown_as: Any, fix: Fix, default: Any, from_link: bool, where) -> tuple[Any, bool]:
    """``fix(given)``, and whether a notice says what was used instead (``shown_as``: the value as the user wrote it)."""
    used, why = fix(given)
    if why is None:
        return used, False
    _note(key, _message(key, shown_as, why, used, from_link, _nearest(fix, used, default)), used, where, given=given)
    return used, True


def _nearest(fix: Fix, used: Any, default: Any) -> bool:
    """Whether to call ``used`` the nearest valid value (a clamped number, the known part of a list), not the default."""
    return getattr(fix, "nearest", False) or not _same(used, default)


def _in_options(options: list, default: Any) -> Fix:
    def fix(value):
        if value in options:
            return value, None
        return default, f"it is not one of the choices ({_listing(options)})"
    return fix


def _in_range(low: int, high: int) -> Fix:
    def fix(value):
        if low <= value <= high:
            return value, None
        return min(max(value, low), high), f"it is outside {low}–{high}"
    fix.nearest = True
    return fix


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


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def set_value(key: str, value: Any) -> None:
    """Set a URL-backed widget's value from a callback (e.g. a preset button)."""
    st.session_state[key] = value
    _write(key, value)


def text_input(label: str, key: str, default: str = "", where=st, **kwargs) -> str:
    _resolve(key, str, default, where=where)
    value = where.text_input(label, key=key, **kwargs)
    _write(key, value)
    return value


def text_area(label: str, key: str, default: str = "", where=st, **kwargs) -> str:
    _resolve(key, str, default, where=where)
    value = where.text_area(label, key=key, **kwargs)
    _write(key, value)
    return value


def _choice(widget: str, label: str, options: Sequence[Any], key: str, default: Any, where, parse, **kwargs) -> Any:
    options = list(options)
    default = options[0] if default is None or default not in options else default
    _resolve(key, parse, default, _in_options(options, default), expect="one of the choices", where=where)
    value = getattr(where, widget)(label, options, key=key, **kwargs)
    _write(key, value)
    return value


def selectbox(label: str, options: Sequence[Any], key: str, default: Any = None, where=st, parse=str, **kwargs) -> Any:
    return _choice("selectbox", label, options, key, default, where, parse, **kwargs)


def radio(label: str, options: Sequence[Any], key: str, default: Any = None, where=st, parse=str, **kwargs) -> Any:
    return _choice("radio", label, options, key, default, where, parse, **kwargs)


def int_slider(label: str, min_value: int, max_value: int, key: str, default: int | None = None, where=st, **kwargs) -> int:
    default = min_value if default is None else min(max(default, min_value), max_value)
    _resolve(key, _parse_int, default, _in_range(min_value, max_value), expect="a whole number", where=where)
    if min_value == max_value:  # st.slider refuses an empty range
        where.caption(f"{label}: {min_value}")
        _write(key, min_value)
        return min_value
    value = where.slider(label, min_value=min_value, max_value=max_value, key=key, **kwargs)
    _write(key, value)
    return value


def int_input(label: str, min_value: int, max_value: int, key: str, default: int | None = None, where=st, **kwargs) -> int:
    default = min_value if default is None else min(max(default, min_value), max_value)
    _resolve(key, _parse_int, default, _in_range(min_value, max_value), expect="a whole number", where=where)
    value = where.number_input(label, min_value=min_value, max_value=max_value, step=1, key=key, **kwargs)
    _write(key, int(value))
    return int(value)


def checkbox(label: str, key: str, default: bool = False, where=st, **kwargs) -> bool:
    _resolve(key, _parse_bool, default, expect="on or off (1/0, true/false)", where=where)
    value = where.checkbox(label, key=key, **kwargs)
    _write(key, value)
    return value


def multiselect(label: str, options: Sequence[Any], key: str, default: Sequence[Any] = (), where=st, parse=str, **kwargs) -> list:
    """Unknown entries are dropped (and named); when none of the link's entries is known, the default is used."""
    options = list(options)
    default = [d for d in default if d in options]

    def parse_list(raw: str) -> list:
        parsed = []
        for part in raw.split(","):
            if part == "":
                continue
            try:
                parsed.append(parse(part))
            except (ValueError, TypeError):
                parsed.append(part)  # kept as text: not an option, so named as unknown below
        return parsed

    def fix(values):
        values = list(values)
        unknown = [v for v in values if v not in options]
        if not unknown:
            return values, None
        known = [v for v in values if v in options]
        return (known or default), f"{_listing(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the choices"

    _resolve(key, parse_list, default, fix, where=where)
    value = where.multiselect(label, options, key=key, **kwargs)
    _write(key, value)
    return value
