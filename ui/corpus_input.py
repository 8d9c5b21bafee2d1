"""Picking the corpus a page runs over: the bundled held-out code, or a user's text file.

Uploads are capped (bytes, then tokens) and decoded strictly as UTF-8 by
``lens_core.corpus``; a file that is binary, empty or over a cap gets a message and is
not used. The uploaded text lives in the session (a URL cannot hold it): the URL keeps
``corpus=upload`` and the file's name, and a link opened elsewhere asks for the file again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional

import streamlit as st

from lens_core.corpus import CorpusError, corpus_from_text, decode_text, default_corpus_tokenizer_matches
from ui import state
from ui.errors import md_escape

MAX_UPLOAD_BYTES = 512 * 1024
MAX_UPLOAD_TOKENS = 100_000
SOURCES = {"default": "Bundled held-out code", "upload": "A text file (upload)"}
FILE_MARK = "\x00corpus file\x00"  # stands for the upload's text in a "copy as Python" snippet
UPLOAD_KEY = "_corpus_upload"  # session_state: {"sha", "name", "text"}


@dataclasses.dataclass(frozen=True)
class CorpusChoice:
    text: Optional[str]  # None: the bundled corpus
    label: str
    file_name: Optional[str] = None

    def snippet_args(self) -> dict:
        """``experiment_snippet`` readable arguments: an upload is read back from its file, not pasted in."""
        return {} if self.text is None else {"corpus_text": FILE_MARK}

    def fix_snippet(self, snippet: str) -> str:
        if self.text is None:
            return snippet
        return snippet.replace(repr(FILE_MARK), f"open({self.file_name!r}, encoding='utf-8').read()")


def check_upload(model: Any, name: str, data: bytes) -> tuple[Optional[str], Optional[str]]:
    """(the file's text, None) when it makes a corpus for ``model``, else (None, a message for the user)."""
    try:
        text = decode_text(data, MAX_UPLOAD_BYTES)
        corpus_from_text(model, text, max_bytes=MAX_UPLOAD_BYTES, max_tokens=MAX_UPLOAD_TOKENS)
    except CorpusError as error:
        return None, f"{name}: {error}"
    return text, None


def corpus_picker(model: Any, where=st) -> Optional[CorpusChoice]:
    """The corpus radio and, for an upload, the uploader; None (with a message drawn) when nothing usable is chosen."""
    bundled_ok = default_corpus_tokenizer_matches(model)
    source = state.radio("Corpus", list(SOURCES), key="corpus", default="default" if bundled_ok else "upload",
                         where=where, horizontal=True, format_func=SOURCES.get,
                         help="The bundled model's held-out standard-library files (37 files, 147k tokens), or your own "
                              f"UTF-8 text (up to {MAX_UPLOAD_BYTES // 1024} KB and {MAX_UPLOAD_TOKENS:,} tokens).")
    if source == "default":
        if not bundled_ok:
            where.warning("The bundled held-out corpus is tokenized for the bundled default model; this model has "
                          "another tokenizer. Upload a text file instead.", icon=":material/warning:")
            return None
        return CorpusChoice(None, SOURCES["default"])
    uploaded = where.file_uploader("Text file", key="corpus_file", accept_multiple_files=False,
                                   help=f"Plain UTF-8 text, at most {MAX_UPLOAD_BYTES // 1024} KB.")
    if uploaded is not None:
        data = uploaded.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        held = st.session_state.get(UPLOAD_KEY)
        if held is None or held["sha"] != sha:
            text, error = check_upload(model, uploaded.name, data)
            if error:
                st.session_state.pop(UPLOAD_KEY, None)
                where.error(md_escape(error), icon=":material/error:")
                return None
            st.session_state[UPLOAD_KEY] = {"sha": sha, "name": uploaded.name, "text": text}
    held = st.session_state.get(UPLOAD_KEY)
    if held is None:
        where.info("Upload a text file to browse it (a link cannot carry the file: upload it again after opening one).",
                   icon=":material/upload_file:")
        return None
    return CorpusChoice(held["text"], f"{held['name']} (sha256 {held['sha'][:12]})", held["name"])
