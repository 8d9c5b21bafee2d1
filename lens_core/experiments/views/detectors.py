"""Head detectors: previous-token, duplicate-token and induction scores for every head.

For a query position ``q`` each detector names target key positions ``k``:
- previous-token: ``k = q - 1``;
- duplicate-token: ``k < q`` with ``token[k] == token[q]`` (earlier copies of the current token);
- induction: ``k <= q`` with ``token[k - 1] == token[q]`` (the token after an earlier copy).

A head's score is the attention it puts on the targets, as a fraction of the
attention on the allowed keys, averaged over the query positions that have a
target (over every sequence of the batch). Allowed keys are ``k <= q``, minus
position 0 with ``exclude_bos`` (the BOS token is a resting place for attention,
not a signal) and minus ``k = q`` with ``exclude_current_token``. With nothing
excluded the denominator is 1 and the score is plain attention mass.

Input: the request's prompt, or (no prompt) the ARENA recipe: ``batch``
sequences of BOS followed by ``seq_len`` random tokens repeated twice, seeded.
On those, an induction head attends from each second-half token to the token
after its first occurrence and scores near 1.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import layer_labels, resolve_tokens, str_tokens

DETECTORS = ("previous_token", "duplicate_token", "induction")


@dataclasses.dataclass(frozen=True)
class DetectorRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    seq_len: int = 50  # repeated random tokens (used when no prompt is given)
    batch: int = 4
    seed: int = 0
    exclude_bos: bool = True
    exclude_current_token: bool = False


@dataclasses.dataclass
class DetectorResult(ExperimentResult):
    """Each head's score for each pattern, in [0, 1]: its mean attention on the pattern's positions."""

    kind = "head_detectors"
    # the three scores, each [layer, head]
    previous_token: torch.Tensor
    duplicate_token: torch.Tensor
    induction: torch.Tensor
    axes: list
    axis_labels: list
    source: str  # "prompt" | "repeated_random"
    str_tokens: list  # the prompt's tokens (first sequence for repeated random tokens)
    exclude_bos: bool
    exclude_current_token: bool


def repeated_random_tokens(model, seq_len: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """``[batch, 1 + 2 * seq_len]``: BOS, then a random sequence, then the same sequence again."""
    if seq_len < 2 or batch < 1:
        raise ValueError("repeated random tokens need seq_len >= 2 and batch >= 1")
    if 1 + 2 * seq_len > model.cfg.n_ctx:
        raise ValueError(f"1 + 2 * seq_len = {1 + 2 * seq_len} tokens exceed the model's context ({model.cfg.n_ctx})")
    bos = getattr(model, "bos_token_id", None)
    bos = 0 if bos is None else int(bos)
    gen = torch.Generator().manual_seed(seed)
    half = torch.randint(0, model.cfg.d_vocab - 1, (batch, seq_len), generator=gen)
    half = half + (half >= bos).long()  # every token but BOS
    return torch.cat([torch.full((batch, 1), bos), half, half], dim=1).to(model.cfg.device)


def target_masks(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean ``[batch, query, key]`` masks of each detector's target keys."""
    n_pos = tokens.shape[1]
    q = torch.arange(n_pos, device=tokens.device)[:, None]
    k = torch.arange(n_pos, device=tokens.device)[None, :]
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, q, k]: token[q] == token[k]
    previous = (k == q - 1).expand_as(same)
    duplicate = same & (k < q)
    # induction: token[k - 1] == token[q], i.e. same[:, q, k - 1], for 1 <= k <= q
    shifted = torch.zeros_like(same)
    shifted[:, :, 1:] = same[:, :, :-1]
    induction = shifted & (k <= q)
    return {"previous_token": previous, "duplicate_token": duplicate, "induction": induction}


def detector_scores(
    pattern: torch.Tensor, tokens: torch.Tensor, exclude_bos: bool = True, exclude_current_token: bool = False
) -> dict[str, torch.Tensor]:
    """Scores ``[..., head]`` from attention patterns ``[batch, ..., head, query, key]`` and ``tokens [batch, pos]``."""
    n_pos = tokens.shape[1]
    q = torch.arange(n_pos, device=tokens.device)[:, None]
    k = torch.arange(n_pos, device=tokens.device)[None, :]
    allowed = k <= q
    if exclude_bos:
        allowed = allowed & (k > 0)
    if exclude_current_token:
        allowed = allowed & (k != q)
    extra = pattern.dim() - 3  # dims between batch and (query, key), e.g. layer and head

    def lift(mask: torch.Tensor) -> torch.Tensor:  # [batch, ...] -> [batch, 1 (x extra), ...]
        return mask.reshape(mask.shape[0], *([1] * extra), *mask.shape[1:])

    pattern = pattern.float()
    denominator = (pattern * allowed).sum(-1).clamp_min(1e-12)  # [batch, ..., query]
    scores = {}
    for name, mask in target_masks(tokens).items():
        mask = mask & allowed
        eligible = mask.any(-1)  # [batch, query]
        total = eligible.sum()
        if total == 0:
            scores[name] = torch.full(pattern.shape[1:-2], float("nan"))
            continue
        per_query = (pattern * lift(mask)).sum(-1) / denominator  # [batch, ..., query]
        scores[name] = (per_query * lift(eligible).float()).sum(dim=(0, -1)) / total
    return scores


@torch.inference_mode()
def head_detectors(model, request: DetectorRequest) -> DetectorResult:
    cfg = model.cfg
    if request.prompt is None and request.tokens is None:
        tokens = repeated_random_tokens(model, request.seq_len, request.batch, request.seed)
        source = "repeated_random"
    else:
        tokens = resolve_tokens(model, request.prompt, request.tokens)
        source = "prompt"
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    pattern = torch.stack([cache[name] for name in names], dim=1)  # [batch, layer, head, query, key]
    scores = detector_scores(pattern, tokens, request.exclude_bos, request.exclude_current_token)
    return DetectorResult(
        previous_token=scores["previous_token"].cpu(),
        duplicate_token=scores["duplicate_token"].cpu(),
        induction=scores["induction"].cpu(),
        axes=["layer", "head"],
        axis_labels=[layer_labels(cfg.n_layers), [f"H{h}" for h in range(cfg.n_heads)]],
        source=source,
        str_tokens=str_tokens(model, tokens[0].tolist()),
        exclude_bos=request.exclude_bos,
        exclude_current_token=request.exclude_current_token,
    )
