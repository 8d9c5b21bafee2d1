"""Corpora: the shipped held-out split and user uploads (caps, strict decoding, windows)."""

import json

import pytest
import torch

from lens_core import HookedTransformer
from lens_core.corpus import (DEFAULT_INDEX_FILE, CorpusError, Document, corpus_from_text, load_default_corpus,
                              make_corpus)


@pytest.fixture(scope="module")
def model():
    return HookedTransformer.from_pretrained("default")


def test_default_corpus_is_the_model_cards_held_out_split():
    corpus = load_default_corpus()
    index = json.loads(DEFAULT_INDEX_FILE.read_text())
    card = (DEFAULT_INDEX_FILE.parent / "README.md").read_text()
    assert len(corpus.documents) == 37
    for doc in corpus.documents:
        assert f"`{doc.name}`" in card
    # The model card's held-out token count (each file followed by <|endoftext|>).
    assert corpus.stream.numel() == index["n_tokens"] == 147_194
    assert corpus.tokens.shape == (1160, 128) and corpus.tokens.dtype == torch.long
    assert (corpus.tokens[:, 0] == 0).all()
    assert corpus.n_predicted == 147_194
    # Windows tile the stream in order, no token dropped or repeated.
    flat = torch.cat([corpus.tokens[w, 1:int(corpus.lengths[w])] for w in range(corpus.n_windows)])
    assert torch.equal(flat, corpus.stream)
    # Each file ends with the separator.
    for doc in corpus.documents:
        assert int(corpus.stream[doc.start + doc.n_tokens - 1]) == 0


def test_window_source_spans_documents():
    corpus = load_default_corpus()
    first = corpus.documents[0]
    w = first.n_tokens // corpus.stride  # the window holding the end of the first file
    source = corpus.window_source(w)
    assert source[0]["document"] == first.name and source[1]["document"] == corpus.documents[1].name
    assert source[1]["first_token"] == 0
    assert sum(s["n_tokens"] for s in source) == int(corpus.lengths[w]) - 1
    assert source[1]["pos"] == source[0]["pos"] + source[0]["n_tokens"]


def test_short_last_window_is_padded_and_masked():
    corpus = make_corpus("t", torch.arange(1, 11), (Document("a", 0, 10),), window_len=4, bos_token_id=0)
    assert corpus.tokens.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 8, 9], [0, 10, 0, 0]]
    assert corpus.lengths.tolist() == [4, 4, 4, 2]
    assert corpus.target_mask()[-1].tolist() == [True, False, False]
    assert corpus.head(2).tokens.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6]]


def test_upload_round_trip(model):
    text = "def f(x):\n    return x + 1\n" * 20
    corpus = corpus_from_text(model, text.encode(), window=32)
    assert corpus.window_len == 32 and (corpus.tokens[:, 0] == 0).all()
    assert model.to_string(corpus.stream) == text
    piece = "def f(x):\n    return x + 1\n"
    n = len(model.to_tokens(piece, prepend_bos=False)[0])
    assert corpus.stream[:n].tolist() == model.to_tokens(piece, prepend_bos=False)[0].tolist()
    assert corpus.digest != corpus_from_text(model, text + "y", window=32).digest


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"  \n\t ", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
    (b"abc\x00def", "NUL"),
    (bytes(range(1, 32)) * 10, "control characters"),
    (b"x" * 2000, "limit is 1,000 bytes"),
])
def test_upload_rejections(model, data, message):
    with pytest.raises(CorpusError, match=message):
        corpus_from_text(model, data, max_bytes=1000)


def test_upload_token_cap_and_window(model):
    with pytest.raises(CorpusError, match="limit is 10"):
        corpus_from_text(model, "a b c d e f g h i j k l m n o p", max_tokens=10)
    with pytest.raises(CorpusError, match="longer than the model's context"):
        corpus_from_text(model, "x = 1", window=129)
