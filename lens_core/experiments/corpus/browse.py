"""Browse a corpus: where does a component matter? Its ablation's loss change at every token.

Components (``browse_components``): a head, an attention layer, an MLP, a neuron or a
transcoder feature (``("head", 1, 3)`` or ``"L1H3"``, ...). Ablations, at every position of every window:

- ``zero``: the activation becomes 0;
- ``mean``: its mean over the whole corpus *at the same position* (windows start with
  BOS, so position 0 keeps its own value and the mean is over like-for-like contexts);
- ``resample``: the activation of another window of the corpus at the same position
  (a seeded cycle over the full-length windows, so the pairing does not depend on batching).

Engine, per batch of windows: one plain forward (the residual entering the component's
layer is kept; when the plain loss of these windows is already known it stops there), then
one ablated forward that *starts* at that layer. Resample adds a forward of the source
windows up to the end of the component's layer; mean, once per corpus, a pass over the corpus
(which records the plain loss of every window when it is not known yet). The plain loss per (model, corpus) and the
corpus means per (model, corpus, hook) are remembered in-process (``_MEMO``, weakly keyed
by the model object, bounded); whole results go through ``cache_store`` at the app.

``browse`` ranks the tokens where the loss rises most when the component is removed (it
helps there) and falls most, with summary statistics. ``window_start``/``window_stop``
run a slice of the corpus (the app runs the corpus in chunks, each cached, so a run can be
left and resumed); :func:`combine` joins chunk results into one.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import weakref
from typing import Any, Optional, Sequence

import torch

from lens_core.corpus import Corpus, CorpusError, Document, corpus_from_text, load_default_corpus, make_corpus
from lens_core.results import ExperimentResult

from .browse_components import COMPONENT_KINDS, Target, component_label, parse_component, resolve_component
from ..interventions.patching import Progress

METHODS = ("zero", "mean", "resample")
__all__ = ["COMPONENT_KINDS", "METHODS", "BrowseRequest", "BrowseResult", "Target", "browse", "chunk_requests", "combine",
           "component_label", "parse_component", "resolve_component"]


class BudgetExceeded(RuntimeError):
    """The run would take longer than the time budget it was given (message for the user)."""


# ---- requests and results ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BrowseRequest:
    component: tuple = ("head", 0, 0)
    method: str = "zero"
    corpus_text: Optional[str] = None  # None (and no corpus_tokens): the bundled model's held-out corpus
    corpus_tokens: Optional[tuple[int, ...]] = None  # a token stream (no BOS), e.g. for a model without a tokenizer
    window_len: int = 128
    window_start: int = 0
    window_stop: Optional[int] = None  # None: to the end of the corpus
    seed: int = 0  # resample pairing
    top_k: int = 50
    threshold: float = 0.1  # nats: the share of tokens whose loss rises (falls) by more
    memory_budget_mb: float = 512.0
    transcoders: str = "bundled"  # features only: which transcoders (the page passes their fingerprint; keys the cache)


@dataclasses.dataclass
class BrowseResult(ExperimentResult):
    kind = "browse"
    loss: torch.Tensor  # [window, pos - 1] plain next-token loss (NaN where there is no next token)
    ablated_loss: torch.Tensor  # [window, pos - 1]
    rise: torch.Tensor  # [k, 2] (window, pos): largest loss rises first
    fall: torch.Tensor  # [k, 2]: largest falls first
    component: list
    component_label: str
    method: str
    corpus_name: str
    corpus_digest: str
    window_start: int
    window_stop: int
    threshold: float
    stats: dict

    @property
    def loss_change(self) -> torch.Tensor:
        return self.ablated_loss - self.loss


def request_corpus(model, request) -> Corpus:
    """The corpus a request names: its uploaded text or token stream, else the bundled held-out split."""
    if request.corpus_text is not None and request.corpus_tokens is not None:
        raise ValueError("give corpus text or corpus token ids, not both")
    if request.corpus_text is not None:
        return corpus_from_text(model, request.corpus_text, window=request.window_len)
    if request.window_len > model.cfg.n_ctx:
        raise CorpusError(f"The window ({request.window_len} tokens) is longer than the model's context ({model.cfg.n_ctx}).")
    if request.corpus_tokens is not None:
        ids = torch.tensor(request.corpus_tokens, dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab):
            raise ValueError(f"corpus token ids must lie in [0, {model.cfg.d_vocab})")
        bos = model.bos_token_id if getattr(model, "tokenizer", None) is not None else 0  # id 0 without a tokenizer
        return make_corpus("tokens", ids, (Document("tokens", 0, ids.numel()),), request.window_len, int(bos))
    check_default_corpus_model(model)
    return load_default_corpus(request.window_len)


def check_default_corpus_model(model) -> None:
    """The shipped corpus is in the bundled tokenizer's ids: refuse a model with another vocabulary."""
    from lens_core.corpus import default_corpus_tokenizer_matches

    if not default_corpus_tokenizer_matches(model):
        raise CorpusError("The bundled held-out corpus is tokenized for the bundled default model; "
                          "this model has another tokenizer. Upload a text file to browse it.")


# ---- in-process memo ---------------------------------------------------------------------
class _ModelMemo:
    """Per model object: plain loss rows per corpus, corpus means per (corpus, hook)."""

    def __init__(self) -> None:
        self.loss: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # digest -> (loss [n, L-1], known [n])
        self.means: dict[tuple[str, str], torch.Tensor] = {}

    def trim(self, max_corpora: int = 4) -> None:
        while len(self.loss) > max_corpora:
            self.loss.pop(next(iter(self.loss)))
        while len(self.means) > 4 * max_corpora:
            self.means.pop(next(iter(self.means)))


_MEMO: "weakref.WeakKeyDictionary[Any, _ModelMemo]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _memo(model) -> _ModelMemo:
    with _LOCK:
        if model not in _MEMO:
            _MEMO[model] = _ModelMemo()
        return _MEMO[model]


def clear_memo() -> None:
    with _LOCK:
        _MEMO.clear()


# ---- engine -----------------------------------------------------------------------------
def _batch_size(model, window_len: int, budget_mb: float) -> int:
    # logits [L, vocab] float32 plus the cross-entropy's softmax, and activations (small beside them).
    per_window = window_len * (model.cfg.d_vocab_out * 4 * 3 + model.cfg.d_model * 4 * 16)
    return max(1, int(budget_mb * 2**20 // per_window))


def token_losses(logits: torch.Tensor, tokens: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Next-token loss ``[batch, pos - 1]`` in float32, NaN where ``target_mask`` is False."""
    logits = logits[:, :-1].float()
    # logsumexp - target logit: the cross-entropy without materialising the log-softmax (about 2x faster on CPU).
    loss = torch.logsumexp(logits, -1) - logits.gather(-1, tokens[:, 1:, None])[..., 0]
    return torch.where(target_mask, loss, torch.full_like(loss, float("nan")))


def _device(model):
    return model.W_E.device


def corpus_mean(model, corpus: Corpus, target: Target, budget_mb: float = 512.0) -> torch.Tensor:
    """Mean of the hook's activation over the corpus per position ``[pos, ...]``: one pass over the corpus.

    When the plain loss of the corpus is not remembered yet, the pass runs to the end and records it
    (so the ablated batches need no full plain forward); otherwise it stops after the component's layer.
    """
    memo = _memo(model)
    key = (corpus.digest, target.read_hook, target.source)
    if key in memo.means:
        return memo.means[key]
    dev = _device(model)
    batch = _batch_size(model, corpus.window_len, budget_mb)
    total, count = None, torch.zeros(corpus.window_len, device=dev)
    mask_all, tmask_all = corpus.mask(), corpus.target_mask()
    known = memo.loss.get(corpus.digest)
    record = known is None or not bool(known[1].all())
    losses = torch.empty(corpus.n_windows, corpus.window_len - 1) if record else None
    for start in range(0, corpus.n_windows, batch):
        rows = slice(start, min(start + batch, corpus.n_windows))
        tokens, mask = corpus.tokens[rows].to(dev), mask_all[rows].to(dev)
        grabbed = {}

        def grab(act, hook):
            grabbed["act"] = act

        stop = None if record else target.layer + 1
        out = model.run_with_hooks(tokens, fwd_hooks=[(target.read_hook, grab)], stop_at_layer=stop)
        act = target.full(grabbed["act"]).float()
        m = mask.view(*mask.shape, *([1] * (act.dim() - 2))).to(act.dtype)
        part = (act * m).sum(0)
        total = part if total is None else total + part
        count += mask.sum(0)
        if record:
            losses[rows] = token_losses(out, tokens, tmask_all[rows].to(dev)).cpu()
    mean = total / count.clamp(min=1).view(-1, *([1] * (total.dim() - 1)))
    with _LOCK:
        memo.means[key] = mean
        memo.trim()
    if record:
        _remember_plain(memo, corpus, torch.arange(corpus.n_windows), losses)
    return mean


def resample_sources(corpus: Corpus, seed: int) -> torch.Tensor:
    """For each window, the window its activations are taken from: a seeded cycle over the
    full-length windows (no window is its own source); a short last window takes the cycle's first."""
    full = torch.nonzero(corpus.lengths == corpus.window_len).flatten()
    if full.numel() < 2:
        raise CorpusError("Resample ablation needs at least two full-length windows; this corpus has "
                          f"{full.numel()}. Use zero or mean ablation, or a longer text.")
    order = full[torch.randperm(full.numel(), generator=torch.Generator().manual_seed(seed))]
    src = torch.empty(corpus.n_windows, dtype=torch.long)
    src[order] = order.roll(-1)
    if corpus.lengths[-1] < corpus.window_len:
        src[-1] = order[0]
    return src


def _grab_component(model, tokens: torch.Tensor, target: Target) -> torch.Tensor:
    grabbed = {}

    def grab(act, hook):
        grabbed["act"] = act

    model.run_with_hooks(tokens, fwd_hooks=[(target.read_hook, grab)], stop_at_layer=target.layer + 1)
    return target.select(target.full(grabbed["act"]))


@torch.inference_mode()
def ablated_logits(model, corpus: Corpus, target: Target, method: str, windows: torch.Tensor, seed: int = 0,
                   budget_mb: float = 512.0, want_plain: bool = True) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(plain logits or None, ablated logits) ``[batch, pos, vocab]`` for the given window indices."""
    dev = _device(model)
    tokens = corpus.tokens[windows].to(dev)
    value = _ablation_value(model, corpus, target, method, windows, seed, budget_mb)
    kept = {}

    def keep(act, hook):
        kept["resid"] = act

    resid_hook = f"blocks.{target.layer}.hook_resid_pre"
    if want_plain:
        plain = model.run_with_hooks(tokens, fwd_hooks=[(resid_hook, keep)])
        resid = kept["resid"]
    else:
        plain, resid = None, model(tokens, stop_at_layer=target.layer)

    ablated = model.run_with_hooks(resid, start_at_layer=target.layer, fwd_hooks=target.ablation_hooks(value))
    return plain, ablated


def _ablation_value(model, corpus, target, method, windows, seed, budget_mb) -> torch.Tensor:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    dev = _device(model)
    if method == "mean":
        mean = corpus_mean(model, corpus, target, budget_mb)
        return target.select(mean[None])  # [1, pos, ...] broadcast over the batch
    if method == "resample":
        src = resample_sources(corpus, seed)[windows]
        return _grab_component(model, corpus.tokens[src].to(dev), target)
    return torch.zeros(1, 1, *target.value_shape(model), device=dev)


@torch.inference_mode()
def browse(model, request: BrowseRequest, progress: Progress = None, time_budget_s: Optional[float] = None,
           transcoders: Any = None) -> BrowseResult:
    """Loss change at every token of the request's windows when the component is ablated, ranked.

    ``time_budget_s`` (not part of the result): after the first batch, stop with
    :class:`BudgetExceeded` when the estimated total is over it. ``transcoders``: for a feature,
    a ``TranscoderSet`` instead of the model's own (``lens_core.features.load_transcoders``).
    """
    target = resolve_component(model, request.component, transcoders)
    if request.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {request.method!r}")
    corpus = request_corpus(model, request)
    start = int(request.window_start)
    stop = corpus.n_windows if request.window_stop is None else min(int(request.window_stop), corpus.n_windows)
    if not 0 <= start < stop:
        raise ValueError(f"window range [{start}, {stop}) is empty or outside the corpus's {corpus.n_windows} windows")
    memo = _memo(model)
    if request.method == "mean":
        corpus_mean(model, corpus, target, request.memory_budget_mb)
    known_loss = memo.loss.get(corpus.digest)
    batch = _batch_size(model, corpus.window_len, request.memory_budget_mb)
    n = stop - start
    loss = torch.empty(n, corpus.window_len - 1)
    ablated = torch.empty(n, corpus.window_len - 1)
    tmask = corpus.target_mask()
    t0 = time.perf_counter()
    for i, first in enumerate(range(start, stop, batch)):
        windows = torch.arange(first, min(first + batch, stop))
        have_plain = known_loss is not None and bool(known_loss[1][windows].all())
        plain, abl = ablated_logits(model, corpus, target, request.method, windows, request.seed,
                                    request.memory_budget_mb, want_plain=not have_plain)
        tokens, m = corpus.tokens[windows].to(abl.device), tmask[windows].to(abl.device)
        rows = slice(first - start, first - start + len(windows))
        loss[rows] = known_loss[0][windows] if have_plain else token_losses(plain, tokens, m).cpu()
        ablated[rows] = token_losses(abl, tokens, m).cpu()
        done = first - start + len(windows)
        if progress is not None:
            progress(done, n)
        if time_budget_s is not None and i == 0 and done < n:
            estimate = (time.perf_counter() - t0) * n / done
            if estimate > time_budget_s:
                raise BudgetExceeded(f"This run would take about {estimate:.0f} s, over the {time_budget_s:.0f} s budget: "
                                     "choose fewer windows (or a smaller model).")
    _remember_plain(memo, corpus, torch.arange(start, stop), loss)
    return _result(request, corpus, start, stop, loss, ablated)


def _remember_plain(memo: _ModelMemo, corpus: Corpus, windows: torch.Tensor, loss: torch.Tensor) -> None:
    with _LOCK:
        if corpus.digest not in memo.loss:
            memo.loss[corpus.digest] = (torch.full((corpus.n_windows, corpus.window_len - 1), float("nan")),
                                        torch.zeros(corpus.n_windows, dtype=torch.bool))
        table, known = memo.loss[corpus.digest]
        table[windows] = loss
        known[windows] = True
        memo.trim()


def ranking(change: torch.Tensor, k: int, window_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """([k, 2] (window, pos) of the largest rises, [k, 2] of the largest falls); NaN entries never rank."""
    flat = change.reshape(-1)
    finite = torch.isfinite(flat)
    k = max(0, min(int(k), int(finite.sum())))
    width = change.shape[1]

    def top(values: torch.Tensor) -> torch.Tensor:
        values = torch.where(finite, values, torch.full_like(values, -math.inf))
        idx = values.topk(k).indices if k else torch.zeros(0, dtype=torch.long)
        return torch.stack([idx // width + window_offset, idx % width], 1)

    return top(flat), top(-flat)


def summary(loss: torch.Tensor, ablated: torch.Tensor, threshold: float) -> dict:
    change = (ablated - loss)
    finite = torch.isfinite(change)
    c = change[finite].double()
    n = int(c.numel())
    if n == 0:
        return {"n_tokens": 0}
    return {
        "n_tokens": n,
        "mean_loss": float(loss[finite].double().mean()),
        "mean_ablated_loss": float(ablated[finite].double().mean()),
        "mean_change": float(c.mean()),
        "mean_abs_change": float(c.abs().mean()),
        "median_change": float(c.median()),
        "max_rise": float(c.max()),
        "max_fall": float(c.min()),
        "share_rise_above": float((c > threshold).double().mean()),
        "share_fall_below": float((c < -threshold).double().mean()),
    }


def _result(request, corpus, start, stop, loss, ablated) -> BrowseResult:
    rise, fall = ranking(ablated - loss, request.top_k, start)
    return BrowseResult(
        loss=loss, ablated_loss=ablated, rise=rise, fall=fall,
        component=list(request.component), component_label=component_label(request.component),
        method=request.method, corpus_name=corpus.name, corpus_digest=corpus.digest,
        window_start=start, window_stop=stop, threshold=float(request.threshold),
        stats=summary(loss, ablated, request.threshold),
    )


def chunk_requests(request: BrowseRequest, n_windows: int, chunk: int = 128) -> list[BrowseRequest]:
    """The request split into slices of ``chunk`` windows (each cached on its own by the app)."""
    return [dataclasses.replace(request, window_start=s, window_stop=min(s + chunk, n_windows))
            for s in range(0, n_windows, chunk)]


def combine(request: BrowseRequest, parts: Sequence[BrowseResult], corpus: Corpus) -> BrowseResult:
    """Join results over consecutive window slices into one (ranking and statistics recomputed)."""
    parts = sorted(parts, key=lambda p: p.window_start)
    for a, b in zip(parts, parts[1:]):
        if a.window_stop != b.window_start:
            raise ValueError("chunk results do not tile the window range")
    loss = torch.cat([p.loss for p in parts])
    ablated = torch.cat([p.ablated_loss for p in parts])
    return _result(request, corpus, parts[0].window_start, parts[-1].window_stop, loss, ablated)
