"""Corpora of token windows: the bundled model's held-out split, or a user's text.

A corpus is one token *stream* (documents one after another) cut into windows of
``window_len`` rows: BOS first, then ``window_len - 1`` consecutive stream tokens. The
last window is shorter when the stream does not divide evenly: its row is padded
with the pad id and ``lengths`` says how many positions are real, so no token is
dropped and none is scored twice.

Axis names: ``window`` (a row), ``pos`` (position in the row; 0 is BOS).

The default corpus is prepared once by ``training/prepare_corpus.py`` from the
held-out standard-library files of the bundled model (the split
``training/train_default_model.py`` defines) and shipped as
``default_model/corpus_heldout.safetensors`` (the token stream, int16) plus
``corpus_heldout.json`` (file names, their offsets in the stream, their sha256), so
the app never depends on the local Python's standard library.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence, Union

import torch

DEFAULT_DIR = Path(__file__).parent / "default_model"
DEFAULT_TOKENS_FILE = DEFAULT_DIR / "corpus_heldout.safetensors"
DEFAULT_INDEX_FILE = DEFAULT_DIR / "corpus_heldout.json"
DEFAULT_CORPUS_NAME = "default-heldout"

DEFAULT_MAX_BYTES = 512 * 1024
DEFAULT_MAX_TOKENS = 100_000


class CorpusError(ValueError):
    """A corpus that cannot be built (empty, binary, over a cap); the message is for the user."""


@dataclasses.dataclass(frozen=True)
class Document:
    name: str
    start: int  # offset of its first token in the stream
    n_tokens: int  # its tokens in the stream (incl. the separator after it, if any)


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Token windows over a stream of documents.

    ``tokens`` LongTensor [window, pos] (BOS at pos 0), ``lengths`` LongTensor [window]
    (real positions per row, BOS included), ``stream`` the documents' tokens without BOS.
    """

    name: str
    tokens: torch.Tensor
    lengths: torch.Tensor
    stream: torch.Tensor
    documents: tuple[Document, ...]
    bos_token_id: int
    digest: str

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def window_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def stride(self) -> int:
        """Stream tokens per full window."""
        return self.window_len - 1

    @property
    def n_predicted(self) -> int:
        """Positions whose next token is in the corpus (what a loss is measured on)."""
        return int((self.lengths - 1).sum())

    def mask(self) -> torch.Tensor:
        """Bool [window, pos]: real (not padding) positions."""
        return torch.arange(self.window_len)[None, :] < self.lengths[:, None]

    def target_mask(self) -> torch.Tensor:
        """Bool [window, pos - 1]: positions whose next token is real (loss positions)."""
        return torch.arange(self.window_len - 1)[None, :] < (self.lengths - 1)[:, None]

    def stream_offset(self, window: int, pos: int) -> int:
        """Stream index of the token at (window, pos); pos 0 (BOS) is not in the stream."""
        if pos < 1:
            raise ValueError("position 0 is the BOS token, not part of the stream")
        return window * self.stride + pos - 1

    def document_at(self, offset: int) -> tuple[Document, int]:
        """(the document holding stream token ``offset``, the token's index inside it)."""
        starts = [d.start for d in self.documents]
        i = bisect.bisect_right(starts, offset) - 1
        doc = self.documents[max(i, 0)]
        return doc, offset - doc.start

    def window_source(self, window: int) -> list[dict[str, Any]]:
        """Where a window's tokens come from: one entry per document it touches,
        ``{"document", "first_token", "pos", "n_tokens"}`` (``pos``: its first position in the row)."""
        if not 0 <= window < self.n_windows:
            raise IndexError(f"window {window} out of range (0..{self.n_windows - 1})")
        out: list[dict[str, Any]] = []
        pos, end = 1, int(self.lengths[window])
        while pos < end:
            doc, first = self.document_at(self.stream_offset(window, pos))
            take = min(end - pos, doc.n_tokens - first)
            out.append({"document": doc.name, "first_token": first, "pos": pos, "n_tokens": take})
            pos += take
        return out

    def window_label(self, window: int) -> str:
        return "; ".join(f"{s['document']} tokens {s['first_token']}–{s['first_token'] + s['n_tokens'] - 1}"
                         for s in self.window_source(window))

    def head(self, n_windows: int) -> "Corpus":
        """The first ``n_windows`` windows (for quick runs and tests)."""
        n = max(1, min(int(n_windows), self.n_windows))
        if n == self.n_windows:
            return self
        cut = n * self.stride
        return make_corpus(f"{self.name}[:{n}]", self.stream[:cut], self.documents, self.window_len, self.bos_token_id)


def _digest(stream: torch.Tensor, documents: Sequence[Document], window_len: int, bos: int) -> str:
    h = hashlib.sha256()
    h.update(stream.to(torch.int64).contiguous().numpy().tobytes())
    h.update(json.dumps([[d.name, d.start, d.n_tokens] for d in documents], separators=(",", ":")).encode())
    h.update(f"{window_len}:{bos}".encode())
    return h.hexdigest()


def make_corpus(name: str, stream: torch.Tensor, documents: Sequence[Document], window_len: int,
                bos_token_id: int, pad_token_id: int | None = None) -> Corpus:
    """Cut a token stream into BOS-first windows of ``window_len`` positions."""
    if window_len < 2:
        raise CorpusError(f"a window needs at least 2 positions (BOS and one token), got {window_len}")
    stream = torch.as_tensor(stream, dtype=torch.long).reshape(-1)
    if stream.numel() == 0:
        raise CorpusError("the corpus has no tokens")
    if bool((stream == bos_token_id).all()):
        raise CorpusError("The corpus has no text to rank: every token in it is the beginning-of-sequence token "
                          f"(id {bos_token_id}). Give a corpus with text.")
    stride = window_len - 1
    n_windows = -(-stream.numel() // stride)
    pad = bos_token_id if pad_token_id is None else pad_token_id
    padded = torch.full((n_windows * stride,), pad, dtype=torch.long)
    padded[: stream.numel()] = stream
    tokens = torch.cat([torch.full((n_windows, 1), bos_token_id, dtype=torch.long), padded.view(n_windows, stride)], 1)
    lengths = torch.full((n_windows,), window_len, dtype=torch.long)
    lengths[-1] = 1 + stream.numel() - (n_windows - 1) * stride
    documents = tuple(documents)
    return Corpus(name, tokens, lengths, stream, documents, int(bos_token_id),
                  _digest(stream, documents, window_len, bos_token_id))


# ----------------------------------------------------------------------------- default corpus

_DEFAULT_MEMO: dict[int, Corpus] = {}


def load_default_corpus(window_len: int = 128) -> Corpus:
    """The bundled model's held-out standard-library files as windows (BOS id 0 first)."""
    if window_len not in _DEFAULT_MEMO:
        from safetensors.torch import load_file

        if not DEFAULT_TOKENS_FILE.is_file() or not DEFAULT_INDEX_FILE.is_file():
            raise FileNotFoundError(f"the default corpus is missing ({DEFAULT_TOKENS_FILE.name}); "
                                    "run `python -m training.prepare_corpus`")
        index = json.loads(DEFAULT_INDEX_FILE.read_text())
        stream = load_file(str(DEFAULT_TOKENS_FILE))["stream"].to(torch.long)
        docs = tuple(Document(d["name"], int(d["start"]), int(d["n_tokens"])) for d in index["documents"])
        if sum(d.n_tokens for d in docs) != stream.numel():
            raise ValueError("corpus_heldout.json does not match corpus_heldout.safetensors")
        _DEFAULT_MEMO[window_len] = make_corpus(DEFAULT_CORPUS_NAME, stream, docs, window_len, int(index["bos_token_id"]))
    return _DEFAULT_MEMO[window_len]


def vocab_digest(vocab: dict) -> str:
    """sha256 of a tokenizer's vocabulary (token string -> id), order-independent."""
    return hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()


_TOKENIZER_MATCH: dict[int, tuple[Any, bool]] = {}


def default_corpus_tokenizer_matches(model: Any) -> bool:
    """Whether ``model``'s tokenizer is the one the shipped corpus was tokenized with."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return False
    hit = _TOKENIZER_MATCH.get(id(tok))
    if hit is not None and hit[0] is tok:
        return hit[1]
    index = json.loads(DEFAULT_INDEX_FILE.read_text())
    same = len(tok) == index["vocab_size"] and vocab_digest(tok.get_vocab()) == index["vocab_sha256"]
    _TOKENIZER_MATCH[id(tok)] = (tok, same)
    return same


# ----------------------------------------------------------------------------- uploads

def decode_text(data: Union[bytes, bytearray, str], max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Strict UTF-8 text from an upload, or a :class:`CorpusError` saying why not."""
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="surrogatepass")
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise CorpusError(f"The file is {len(raw):,} bytes; the limit is {max_bytes:,} bytes. "
                          "Upload a smaller part of it.")
    if isinstance(data, str):
        text = data
    else:
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as error:
            raise CorpusError(f"The file is not UTF-8 text (an invalid byte 0x{raw[error.start]:02x} at offset "
                              f"{error.start:,}). Upload a plain text file.") from None
    if "\x00" in text:
        raise CorpusError("The file contains NUL bytes: it looks binary, not text. Upload a plain text file.")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f\v")
    if controls > max(8, len(text) // 100):
        raise CorpusError(f"The file has {controls:,} control characters: it looks binary, not text.")
    if not text.strip():
        raise CorpusError("The file is empty (no text besides white space).")
    return text


def corpus_from_text(model: Any, text: Union[str, bytes, bytearray], max_bytes: int = DEFAULT_MAX_BYTES,
                     max_tokens: int = DEFAULT_MAX_TOKENS, window: int | None = None, name: str = "upload") -> Corpus:
    """A user's text (bytes decoded strictly as UTF-8) as a one-document corpus.

    Raises :class:`CorpusError` for binary, empty or over-cap input, and for a window
    longer than the model's context.
    """
    text = decode_text(text, max_bytes)
    n_ctx = int(model.cfg.n_ctx)
    window = min(128, n_ctx) if window is None else int(window)
    if window > n_ctx:
        raise CorpusError(f"The window ({window} tokens) is longer than the model's context ({n_ctx}).")
    tok = model._require_tokenizer()
    ids = tok.encode(text, add_special_tokens=False, verbose=False)
    if len(ids) > max_tokens:
        raise CorpusError(f"The text is {len(ids):,} tokens; the limit is {max_tokens:,}. Upload a shorter text.")
    if not ids:
        raise CorpusError("The text has no tokens.")
    bos = model.bos_token_id
    if bos is None:
        raise CorpusError("This model's tokenizer has no BOS token to start each window with.")
    stream = torch.tensor(ids, dtype=torch.long)
    return make_corpus(name, stream, (Document(name, 0, len(ids)),), window, int(bos), int(model.pad_token_id))
