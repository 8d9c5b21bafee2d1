"""Turn any exception from a page's work into a clear ``st.error``; never a traceback in the page.

Usage in a page::

    with errors.guard("computing the attention patterns"):
        result = ...

On an exception the block shows the message and stops the page run (``st.stop``),
so the rest of the page is not drawn with missing data. The traceback goes to the
server log. Streamlit's own control-flow exceptions (``st.stop``, ``st.rerun``)
derive from ``BaseException`` and pass through untouched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from typing import Callable, Iterator, TypeVar

import streamlit as st

from lens_core import ModelLoadError, PromptTooLongError
from lens_core.corpus import CorpusError
from lens_core.features import FeaturesUnavailable
from lens_core.pool import DeviceOutOfMemoryError, QueueTimeoutError

log = logging.getLogger("circuit_explorer")
F = TypeVar("F", bound=Callable)

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


class UserInputError(ValueError):
    """Something the user typed or picked is not usable; the message says what and how to fix it."""


# Errors whose message is written for the user (shown as is).
USER_FACING = (UserInputError, ModelLoadError, PromptTooLongError, DeviceOutOfMemoryError, QueueTimeoutError, CorpusError,
               FeaturesUnavailable)


def md_escape(text: str) -> str:
    """Escape Markdown (and the HTML angle brackets) so user text shows literally in st.error/st.markdown."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def message_for(exc: BaseException, what: str) -> str:
    if isinstance(exc, USER_FACING):
        return str(exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = detail[:300]
    return f"Something went wrong while {what} ({type(exc).__name__}{': ' + detail if detail else ''})."


def show_error(exc: BaseException, what: str, where=None) -> None:
    (where or st).error(md_escape(message_for(exc, what)), icon=":material/error:")


@contextlib.contextmanager
def guard(what: str = "running this page", stop: bool = True, where=None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing escapes to the page
        if not isinstance(exc, USER_FACING):
            log.exception("error while %s", what)
        show_error(exc, what, where)
        if stop:
            st.stop()


def guarded(what: str = "running this page") -> Callable[[F], F]:
    """Decorator form of :func:`guard` for a page's main function."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with guard(what):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
