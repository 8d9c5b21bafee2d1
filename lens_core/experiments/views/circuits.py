"""Circuits read from the weights: QK and OV circuits, copying scores, composition scores.

Row-vector convention (as TransformerLens): a residual vector ``x [d_model]``
goes through ``x @ W``. Per head:
- QK circuit ``W_Q W_K^T [d_model, d_model]``: attention score ``x_q W_QK x_k^T``.
- OV circuit ``W_V W_O [d_model, d_model]``: what the head writes for what it reads.
- Full OV circuit ``W_E W_V W_O W_U [d_vocab, d_vocab]``: source token -> logits it
  pushes, when the head attends to it (norms and other layers ignored).

The copying score is the one of Elhage et al. (2021): for the eigenvalues
``lambda_i`` of the full OV circuit, ``Re(sum lambda_i) / sum |lambda_i|``:
1 for a head that only copies tokens, -1 for one that only suppresses them.

Composition scores (same paper): how much a later head (layer l2) reads what an
earlier head (l1) writes, ``||W_A W_B||_F / (||W_A||_F ||W_B||_F)`` with
``W_A = OV(l1)`` and ``W_B = QK(l2)`` (Q), ``QK(l2)^T`` (K) or ``OV(l2)`` (V). All
of them come from ``d_head x d_head`` Gram matrices, never a ``d_model`` square.
Grouped-query models use each query head's key/value weights (shared in a group).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.factored_matrix import FactoredMatrix
from lens_core.results import ExperimentResult

from .._common import TokenLike, check_head, head_labels, layer_labels, resolve_token, str_tokens


# ---- circuits as factored matrices -----------------------------------------------
def qk_circuit(model) -> FactoredMatrix:
    """``[n_layers, n_heads, d_model, d_model]``; index it: ``qk_circuit(model)[l, h]``."""
    return FactoredMatrix(model.W_Q.float(), model.W_K.float().transpose(-1, -2))


def ov_circuit(model) -> FactoredMatrix:
    """``[n_layers, n_heads, d_model, d_model]``."""
    return FactoredMatrix(model.W_V.float(), model.W_O.float())


def full_ov_circuit(model, layer: int, head: int) -> FactoredMatrix:
    """``W_E W_V W_O W_U`` of one head, ``[d_vocab, d_vocab_out]``, kept factored (rank d_head)."""
    check_head(model, layer, head)
    W_E, W_U = model.W_E.float(), model.W_U.float()
    return FactoredMatrix(W_E @ model.W_V[layer, head].float(), model.W_O[layer, head].float() @ W_U)


def ov_copying_scores(model) -> torch.Tensor:
    """``[n_layers, n_heads]``: ``Re(sum eig) / sum |eig|`` of each head's full OV circuit."""
    if model.cfg.d_vocab != model.cfg.d_vocab_out:
        raise ValueError("copying scores need the same input and output vocabulary")
    # The full circuit W_E W_V W_O W_U ([vocab, vocab]) has the same nonzero eigenvalues as
    # W_O (W_U W_E) W_V ([d_head, d_head]): W_U W_E is only [d_model, d_model], so no
    # vocabulary-sized product is ever formed (GPT-2 small: 3 MB instead of 1.9 GB).
    unembed_embed = model.W_U.double() @ model.W_E.double()  # [d_model, d_model]
    small = model.W_O.double() @ unembed_embed @ model.W_V.double()  # [layer, head, d_head, d_head]
    eig = torch.linalg.eigvals(small)
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()


def _gram_right(B: torch.Tensor) -> torch.Tensor:
    return B @ B.transpose(-1, -2)


def _gram_left(A: torch.Tensor) -> torch.Tensor:
    return A.transpose(-1, -2) @ A


def composition_scores(model, kind: str) -> torch.Tensor:
    """``[n_layers, n_heads, n_layers, n_heads]``: score of (l1, h1) -> (l2, h2), NaN unless l2 > l1."""
    if kind not in ("q", "k", "v"):
        raise ValueError(f"composition kind must be 'q', 'k' or 'v', got {kind!r}")
    cfg = model.cfg
    W_Q, W_K, W_V, W_O = (w.double() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    # Writer: OV(l1) = W_V1 @ W_O1. Reader W_B = B_in @ B_out with B_in [d_model, d_head]:
    #   q: W_Q W_K^T, k: W_K W_Q^T, v: W_V W_O.
    B_in, B_out = {"q": (W_Q, W_K.transpose(-1, -2)), "k": (W_K, W_Q.transpose(-1, -2)), "v": (W_V, W_O)}[kind]
    gram_writer = _gram_left(W_V)  # [layer, head, d_head, d_head]
    gram_reader = _gram_right(B_out)
    writer_norm = FactoredMatrix(W_V, W_O).norm()  # [layer, head]
    reader_norm = FactoredMatrix(B_in, B_out).norm()
    out = torch.full((cfg.n_layers, cfg.n_heads, cfg.n_layers, cfg.n_heads), float("nan"), dtype=torch.float64)
    for l1 in range(cfg.n_layers - 1):
        for l2 in range(l1 + 1, cfg.n_layers):
            # ||W_V1 M B_out2||^2 = tr(M^T G_V1 M G_B2) with M = W_O1 @ B_in2 [h1, h2, d_head, d_head]
            M = torch.einsum("iem,jmf->ijef", W_O[l1], B_in[l2])
            inner = M.transpose(-1, -2) @ gram_writer[l1][:, None] @ M  # [h1, h2, d_head, d_head]
            norm_sq = (inner * gram_reader[l2][None]).sum(dim=(-1, -2))
            out[l1, :, l2, :] = norm_sq.clamp_min(0).sqrt() / (writer_norm[l1][:, None] * reader_norm[l2][None, :])
    return out.float()


# ---- experiments ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HeadCircuitsRequest:
    layer: int = 0
    head: int = 0
    source_tokens: tuple[TokenLike, ...] = ()  # empty: the tokens this head copies most
    n_source_tokens: int = 10
    top_k: int = 5


@dataclasses.dataclass
class HeadCircuitsResult(ExperimentResult):
    kind = "head_circuits"
    copying_scores: torch.Tensor  # [layer, head]
    qk_norms: torch.Tensor  # [layer, head], Frobenius
    ov_norms: torch.Tensor  # [layer, head]
    qk_singular_values: torch.Tensor  # [d_head] of the chosen head
    ov_singular_values: torch.Tensor  # [d_head]
    source_token_ids: torch.Tensor  # [source]
    top_output_ids: torch.Tensor  # [source, k]: full OV circuit's largest logits for each source token
    top_output_values: torch.Tensor  # [source, k]
    source_labels: list
    top_output_labels: list  # [source][k]
    axes: list
    axis_labels: list
    layer: int
    head: int


@torch.inference_mode()
def head_circuits(model, request: HeadCircuitsRequest) -> HeadCircuitsResult:
    cfg = model.cfg
    layer, head = check_head(model, request.layer, request.head)
    full = full_ov_circuit(model, layer, head)
    if request.source_tokens:
        sources = [resolve_token(model, t, "source token") for t in request.source_tokens]
        if any(s >= cfg.d_vocab for s in sources):
            raise ValueError(f"source tokens must be input tokens (< {cfg.d_vocab})")
    else:
        # The diagonal of the full circuit: how much reading token t raises t's own logit.
        diagonal = (full.A * full.B.transpose(0, 1)[: cfg.d_vocab]).sum(-1) if cfg.d_vocab <= cfg.d_vocab_out else None
        if diagonal is None:
            raise ValueError("give source tokens: this model's output vocabulary is smaller than its input one")
        sources = diagonal.topk(min(request.n_source_tokens, cfg.d_vocab)).indices.tolist()
    rows = full.A[sources] @ full.B  # [source, d_vocab_out]
    k = max(1, min(request.top_k, cfg.d_vocab_out))
    values, ids = rows.topk(k, dim=-1)
    return HeadCircuitsResult(
        copying_scores=ov_copying_scores(model).cpu() if cfg.d_vocab == cfg.d_vocab_out else torch.full((cfg.n_layers, cfg.n_heads), float("nan")),
        qk_norms=qk_circuit(model).norm().cpu(),
        ov_norms=ov_circuit(model).norm().cpu(),
        qk_singular_values=qk_circuit(model)[layer, head].S.cpu(),
        ov_singular_values=ov_circuit(model)[layer, head].S.cpu(),
        source_token_ids=torch.tensor(sources),
        top_output_ids=ids.cpu(),
        top_output_values=values.cpu(),
        source_labels=str_tokens(model, sources),
        top_output_labels=[str_tokens(model, row.tolist()) for row in ids],
        axes=["layer", "head"],
        axis_labels=[layer_labels(cfg.n_layers), [f"H{h}" for h in range(cfg.n_heads)]],
        layer=layer,
        head=head,
    )


@dataclasses.dataclass(frozen=True)
class CompositionRequest:
    min_layer_gap: int = 1  # only pairs with l2 - l1 >= this


@dataclasses.dataclass
class CompositionResult(ExperimentResult):
    kind = "composition_scores"
    q: torch.Tensor  # [head (writer), head (reader)] flattened layer-major: [n_layers*n_heads, n_layers*n_heads]
    k: torch.Tensor
    v: torch.Tensor
    head_labels: list  # labels of both axes
    axes: list


@torch.inference_mode()
def composition(model, request: Optional[CompositionRequest] = None) -> CompositionResult:
    request = request or CompositionRequest()
    cfg = model.cfg
    n = cfg.n_layers * cfg.n_heads
    gap = int(request.min_layer_gap)
    if gap < 1:
        raise ValueError("min_layer_gap must be at least 1: composition needs a later layer")
    layers = torch.arange(cfg.n_layers).repeat_interleave(cfg.n_heads)
    keep = (layers[None, :] - layers[:, None]) >= gap  # [writer, reader]
    scores = {}
    for kind in ("q", "k", "v"):
        flat = composition_scores(model, kind).reshape(n, n)
        scores[kind] = torch.where(keep, flat, torch.full_like(flat, float("nan"))).cpu()
    return CompositionResult(
        q=scores["q"], k=scores["k"], v=scores["v"], head_labels=head_labels(cfg.n_layers, cfg.n_heads), axes=["writer", "reader"]
    )
