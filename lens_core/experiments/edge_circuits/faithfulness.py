"""Exact edge-level patching: run a circuit alone and measure how much of the behaviour it keeps.

A circuit is a set of edges ``mask [S, R]`` of :class:`lens_core.experiments.edge_circuits.edges.Graph`.
The run takes the clean prompt; every receiver's input is recomputed as

    input_r = resid (this run) - sum over senders s with mask[s, r] off of (out_s (this run) - out_s (corrupted run))

so an edge outside the circuit carries its sender's corrupted output and an edge inside
carries the sender's output *in this run* (itself changed by what is removed upstream).
All edges kept is the clean run, none kept the corrupted run. With ``ablation="mean"`` the
corrupted outputs are averaged over the task's prompts first (mean ablation). The per-head receiver inputs
are the hook points ``blocks.{l}.hook_q_input`` etc.; the logits' input is the last block's
``hook_resid_post``.

Many circuits run as one batch (rows = circuits x prompts), so a curve of ``k`` circuit
sizes costs about ``k`` forward passes (cut into chunks under ``memory_budget_mb``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import torch

from lens_core.results import ExperimentResult

from .circuit_graph import prune, rank_edges, top_circuit
from .edges import (
    EdgeAttributionRequest,
    Graph,
    Task,
    build_graph,
    edge_attribution,
    final_resid,
    sender_hooks,
    sender_outputs,
    task_from_request,
    task_metric,
)

Progress = Optional[Callable[[int, int], None]]


def _correct(x: torch.Tensor, delta: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``x - sum_s removed[b, s, r] * delta[b, s]``. x: [b, pos, r, d] or [b, pos, d] (one receiver);
    delta: [b, s, pos, d]; removed: [b, s, r] (or [b, s])."""
    if x.dim() == 3:
        return x - torch.einsum("bspd,bs->bpd", delta, removed.to(delta.dtype))
    return x - torch.einsum("bspd,bsr->bprd", delta, removed.to(delta.dtype))


def patched_metric(model, graph: Graph, task: Task, masks: torch.Tensor, corrupt_out: Optional[torch.Tensor] = None,
                   memory_budget_mb: float = 512.0, progress: Progress = None) -> torch.Tensor:
    """Mean task metric ``[C]`` of each circuit ``masks[c]`` (``[C, S, R]`` bool), run exactly."""
    n, n_pos = task.clean.shape
    S, R = graph.allowed.shape
    d = model.cfg.d_model
    if corrupt_out is None:
        corrupt_out = sender_outputs(model, graph, task.corrupted)[0]
    removed_all = (~masks.bool() & graph.allowed).to(corrupt_out.device)  # [C, S, R]
    itemsize = torch.finfo(model.cfg.dtype).bits // 8
    row_bytes = itemsize * n_pos * (S * d + 8 * (graph.n_heads + 2 * graph.n_kv) * d + 4 * model.cfg.d_mlp)
    per_chunk = max(1, int(memory_budget_mb * 2**20 // (row_bytes * n)))  # circuits per batch
    out = []
    for c0 in range(0, masks.shape[0], per_chunk):
        removed = removed_all[c0 : c0 + per_chunk]
        C = removed.shape[0]
        rows = removed.repeat_interleave(n, dim=0)  # [C * n, S, R]: circuit-major, like the tokens below
        current = torch.empty(C * n, S, n_pos, d, dtype=corrupt_out.dtype, device=corrupt_out.device)
        delta = torch.empty_like(current)

        def after_senders(x, hook, first, last):
            now = current[:, first:last].unflatten(0, (C, n))  # rows are circuit-major: broadcast, no copy
            delta[:, first:last] = (now - corrupt_out[None, :, first:last]).flatten(0, 1)

        hooks = sender_hooks(model, graph, current)
        wrapped = []
        for name, fn in hooks:  # refresh delta for each sender as soon as its output is known
            lo, hi = _sender_span(graph, name)
            wrapped.append((name, fn))
            wrapped.append((name, lambda x, h, lo=lo, hi=hi: after_senders(x, h, lo, hi)))
        H, KV = graph.n_heads, graph.n_kv
        for l in range(graph.n_layers):
            # The q, k and v inputs of a layer share their senders: one pass over ``delta`` corrects all three
            # (the q hook fires first and leaves the k and v parts for the next two hooks).
            first = graph.receiver(l, "q")
            n_send = graph.senders_before(first)
            attention = rows[:, :n_send, first : first + H + 2 * KV]
            parts: dict = {}

            def fix_q(x, hook, sel=attention, n_send=n_send, parts=parts):
                resid = x[:, :, :1]  # every head's copy is the same residual unless a hook changed it
                corrected = _correct(resid.expand(-1, -1, H + 2 * KV, -1), delta[:, :n_send], sel)
                parts["k"], parts["v"] = corrected[:, :, H : H + KV], corrected[:, :, H + KV :]
                return corrected[:, :, :H] + (x - resid)

            def fix_kv(x, hook, kind, parts=parts):
                return parts.pop(kind) + (x - x[:, :, :1])

            mlp = graph.receiver(l, "mlp")
            n_mlp = graph.senders_before(mlp)

            def fix_mlp(x, hook, sel=rows[:, :n_mlp, mlp], n_mlp=n_mlp):
                return _correct(x, delta[:, :n_mlp], sel)

            wrapped += [(f"blocks.{l}.hook_q_input", fix_q),
                        (f"blocks.{l}.hook_k_input", lambda x, h, f=fix_kv: f(x, h, "k")),
                        (f"blocks.{l}.hook_v_input", lambda x, h, f=fix_kv: f(x, h, "v")),
                        (f"blocks.{l}.hook_mlp_in", fix_mlp)]
        last = R - 1

        def fix_logits(x, hook):
            return _correct(x, delta, rows[:, :, last])

        wrapped.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", fix_logits))
        tokens = task.clean.repeat(C, 1)
        with torch.no_grad(), model.hooks(fwd_hooks=wrapped):
            resid = final_resid(model, tokens)
            out.append(task_metric(model, resid, task, C).view(C, n).mean(1))
        if progress is not None:
            progress(min(c0 + per_chunk, masks.shape[0]), masks.shape[0])
    return torch.cat(out).float().cpu()


def _sender_span(graph: Graph, hook_name: str) -> tuple[int, int]:
    if hook_name == "blocks.0.hook_resid_pre":
        return 0, 1
    layer = int(hook_name.split(".")[1])
    if hook_name.endswith("hook_z"):
        first = graph.head_sender(layer, 0)
        return first, first + graph.n_heads
    return graph.mlp_sender(layer), graph.mlp_sender(layer) + 1


def curve_sizes(total: int, points: int) -> list[int]:
    """``points`` circuit sizes from 1 edge to all ``total``, spaced evenly on a log scale."""
    if points < 2 or total < 2:
        return [total]
    sizes = {max(1, min(total, round(math.exp(math.log(total) * i / (points - 1))))) for i in range(points)}
    return sorted(sizes)


# ---- the experiment ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FaithfulnessRequest(EdgeAttributionRequest):
    n_edges: int = 0  # the circuit's size (at most this many edges, see edges.top_circuit); 0: use threshold
    threshold: Optional[float] = None
    curve_points: int = 10
    memory_budget_mb: float = 512.0
    # What an edge outside the circuit carries: its sender's output on the corrupted prompt ("corrupted"),
    # or that output averaged over the task's corrupted prompts, per position ("mean").
    ablation: str = "corrupted"


@dataclasses.dataclass
class FaithfulnessResult(ExperimentResult):
    """The selected circuit and its exact metric with every other edge ablated; the faithfulness curve
    (the metric of the top n edges alone, for growing n)."""

    kind = "circuit_faithfulness"
    circuit: torch.Tensor  # [S, R] bool: the selected circuit, pruned
    circuit_metric: float  # its exact mean logit difference
    circuit_normalized: float
    curve_top_n: list  # per curve point: how many top-ranked edges were taken (before pruning)
    curve_edges: list  # per curve point: edges in the circuit (after pruning; at most the size asked)
    curve_metric: list  # exact mean logit difference per point
    curve_normalized: list  # (metric - ablated) / (clean - ablated)
    clean_metric: float
    corrupted_metric: float
    ablated_metric: float  # no edge kept: every edge carries the ablated value (= corrupted_metric for "corrupted")
    total_edges: int
    method: str
    ablation: str


def normalized(value: float, clean: float, corrupted: float) -> float:
    span = clean - corrupted
    return float("nan") if abs(span) < 1e-9 else (value - corrupted) / span


ABLATIONS = ("corrupted", "mean")


def circuit_faithfulness(model, request: FaithfulnessRequest, progress: Progress = None) -> FaithfulnessResult:
    if request.ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {request.ablation!r}")
    scores = edge_attribution(model, request)
    total = scores.n_edges
    if (request.n_edges == 0) == (request.threshold is None):
        raise ValueError("give a circuit size (n_edges >= 1) or a score threshold, not both")
    if request.threshold is None and not 1 <= request.n_edges <= total:
        raise ValueError(f"the circuit size must be between 1 and the graph's {total} edges, got {request.n_edges}")
    if request.threshold is not None and not request.threshold >= 0:
        raise ValueError(f"the score threshold must be a number >= 0, got {request.threshold}")
    graph = build_graph(model.cfg)
    task = task_from_request(model, request)
    order = rank_edges(scores.scores, scores.allowed)
    sizes = curve_sizes(total, request.curve_points)

    def top(k: int) -> tuple[torch.Tensor, int]:
        return top_circuit(scores.scores, scores.allowed, scores.receiver_owners, k, order)

    if request.threshold is None:
        selected = top(request.n_edges)[0]
    else:
        selected = prune(scores.allowed & (scores.scores.abs() >= request.threshold), scores.receiver_owners)
    curve = [top(k) for k in sizes]
    masks = torch.stack([mask for mask, _ in curve] + [selected, torch.zeros_like(selected)])
    corrupt_out = sender_outputs(model, graph, task.corrupted)[0]
    if request.ablation == "mean":
        corrupt_out = corrupt_out.mean(0, keepdim=True).expand_as(corrupt_out)
    metric = patched_metric(model, graph, task, masks, corrupt_out, request.memory_budget_mb, progress).tolist()
    clean, ablated = scores.clean_metric, metric[-1]
    return FaithfulnessResult(
        circuit=selected, circuit_metric=metric[-2], circuit_normalized=normalized(metric[-2], clean, ablated),
        curve_top_n=[k for _, k in curve], curve_edges=[int(m.sum()) for m in masks[:-2]], curve_metric=metric[:-2],
        curve_normalized=[normalized(v, clean, ablated) for v in metric[:-2]], clean_metric=clean,
        corrupted_metric=scores.corrupted_metric, ablated_metric=ablated, total_edges=total, method=request.method,
        ablation=request.ablation,
    )


def acdc_refine(model, request: EdgeAttributionRequest, circuit: torch.Tensor, threshold: float,
                time_budget_s: float = 30.0, batch: int = 16, progress: Progress = None) -> torch.Tensor:
    """ACDC-style pruning of ``circuit``: edges by increasing ``|score|``, each removed for good when its
    exact removal (with the edges already removed) moves the normalized metric by less than ``threshold``.
    Candidates are tried ``batch`` at a time (each alone on top of the current circuit); stops after
    ``time_budget_s`` seconds, returning what it has."""
    import time

    scores = edge_attribution(model, request)
    graph = build_graph(model.cfg)
    task = task_from_request(model, request)
    corrupt_out = sender_outputs(model, graph, task.corrupted)[0]
    span = scores.clean_metric - scores.corrupted_metric
    current = circuit.clone().bool()
    candidates = list(reversed(rank_edges(scores.scores, current & scores.allowed).tolist()))
    started, done = time.monotonic(), 0
    base = float(patched_metric(model, graph, task, current[None], corrupt_out)[0])
    while candidates and time.monotonic() - started < time_budget_s:
        trial, candidates = candidates[:batch], candidates[batch:]
        masks = current[None].repeat(len(trial), 1, 1)
        for row, flat in enumerate(trial):
            masks[row].view(-1)[flat] = False
        values = patched_metric(model, graph, task, masks, corrupt_out).tolist()
        for i, (flat, value) in enumerate(zip(trial, values)):
            if abs(value - base) / max(abs(span), 1e-9) < threshold:
                current.view(-1)[flat] = False
                base = value
                candidates = trial[i + 1 :] + candidates  # measured against the old circuit: try again
                break
        done += 1
        if progress is not None:
            progress(done, done + len(candidates) // batch)
    return prune(current, scores.receiver_owners)
