"""A token as a reader can tell it apart: visible whitespace, and for a token that is part of a UTF-8 character
(it decodes to the replacement character "\\ufffd") its bytes as ``<0xE2>`` plus its id.

Byte-level BPE tokenizers (GPT-2 style, the bundled model's) spell a token's bytes with one printable character
per byte; SentencePiece byte fallback spells a lone byte ``<0xE2>``. :func:`token_bytes` reads both, so the bytes
come from the vocabulary itself, not from the lossy decoded text.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache
from typing import Any, Optional

from ui.charts import visible

REPLACEMENT = "\ufffd"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet, character -> byte: printable Latin-1 bytes stand for themselves, the other
    bytes (controls, space, 0x7F-0xA0, 0xAD) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    alphabet = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            alphabet[chr(256 + extra)] = b
            extra += 1
    return alphabet


def token_bytes(tokenizer: Any, token_id: int) -> Optional[bytes]:
    """The bytes a token stands for, read from the vocabulary piece; None when the piece is neither a byte-level
    BPE spelling nor ``<0xNN>`` byte fallback pieces."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:  # noqa: BLE001 - no vocabulary lookup for this tokenizer: no bytes
        return None
    if not isinstance(piece, str) or not piece:
        return None
    fallback = _BYTE_PIECE.findall(piece)
    if fallback and _BYTE_PIECE.sub("", piece) == "":
        return bytes(int(h, 16) for h in fallback)
    alphabet = _byte_level_alphabet()
    if all(c in alphabet for c in piece):
        return bytes(alphabet[c] for c in piece)
    return None


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start:error.end]), error.end


codecs.register_error("circuit_explorer_hex_bytes", _hex_bytes)


def token_name(model: Any, token_id: int, text: Optional[str] = None) -> str:
    """``text`` (default: the model's decoding of the token) with whitespace made visible; when it holds the
    replacement character, the token's bytes instead, undecodable ones as ``<0xNN>``, and its id: ``<0xE2> (id 241)``.
    Plain text: escape it where it reaches HTML or Markdown."""
    tokenizer = getattr(model, "tokenizer", None)
    if text is None:
        text = tokenizer.decode([int(token_id)]) if tokenizer is not None else f"<{int(token_id)}>"
    if REPLACEMENT not in text:
        return visible(text)
    raw = token_bytes(tokenizer, token_id) if tokenizer is not None else None
    shown = raw.decode("utf-8", errors="circuit_explorer_hex_bytes") if raw is not None else text
    return f"{visible(shown)} (id {int(token_id)})"
