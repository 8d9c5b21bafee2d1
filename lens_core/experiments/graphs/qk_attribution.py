"""The ``qk_attribution`` experiment: why head ``layer.head`` attends from one position to another.

The score is split exactly into (query-side node) x (key-side node) pairs (``_qk_split``: norms frozen
as the attribution graph freezes them; the pairs plus bias terms sum to ``hook_attn_scores``). Single
pairs of features are small, so the result also groups the nodes (the token embedding, the positional
embedding, each earlier head's output, each layer's features, its error, its biases, the constant of
each side) and reports, per pair of groups:

- ``group_raw``: its part of the score itself;
- ``group_contrast``: its part of the *excess* of the score over the mean score of the other keys the
  query sees (what the softmax acts on: a term equal at every key changes no weight). The query's
  nodes are the same for every key, so the contrast is exact too: the key-side groups of the other
  keys are averaged (a group absent at a key counts 0).

``summary`` says in words which pair of groups explains the excess and its share, what mostly drives
that pair's features on each side (``feature_inputs``: each feature's input split over the nodes at its
position, weighted by its part of the pair), and the strongest single pair. On the bundled model's
induction preset (first preset; induction head L1H3, query the last token ' non', key the token after
its earlier copy, ' example') the dominant pair is (layer 0's transcoder features at the query: the
current token) x (layer 0's features at the key, which read L0H0's previous-token output: the summary
says so, 71% of their input there), about three quarters of the excess; L0H0's own output at the key is
the next pair (tests/experiments/test_qk_attribution.py).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import resolve_tokens, str_tokens
from ._qk_split import ResidualNodes, prepare, residual_nodes, split_prepared


@dataclasses.dataclass(frozen=True)
class QKAttributionRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    layer: int = 1
    head: int = 0
    query_pos: int = -1  # negative: from the end
    key_pos: Optional[int] = None  # None: the key the head attends to most from the query
    top_pairs: int = 20
    transcoders: str = "bundled"


@dataclasses.dataclass
class QKAttributionResult(ExperimentResult):
    kind = "qk_attribution"
    layer: int
    head: int
    query_pos: int
    key_pos: int
    score: float  # the real model's pre-softmax score
    pattern: float  # the real attention weight
    baseline: float  # mean score over the other keys the query sees (the score itself when there are none)
    query_kind: list  # query-side nodes (embedding | pos_embed | feature | error | head | bias), then "constant"
    query_layer: list
    query_index: list  # feature index, head index, token id (embedding), position (pos_embed); -1 otherwise
    key_kind: list
    key_layer: list
    key_index: list
    pairs: torch.Tensor  # [n_query + 1, n_key + 1]: exact; sums to ``score``
    top_query: list  # the top pairs by |value|: query node index, key node index, value
    top_key: list
    top_value: list
    query_groups: list  # group names, query side
    key_groups: list
    group_raw: torch.Tensor  # [query groups, key groups]: sums to ``score``
    group_contrast: torch.Tensor  # [query groups, key groups]: sums to ``score - baseline``
    summary: str
    str_tokens: list
    token_ids: list
    settings: dict


def node_group(kind: str, layer: int, index: int) -> str:
    if kind == "head":
        return f"L{layer}H{index} output"
    if kind in ("feature", "error"):
        return f"layer {layer} {kind}s" if kind == "feature" else f"layer {layer} error"
    if kind == "bias":
        return f"layer {layer} biases"
    return {"embedding": "token embedding", "pos_embed": "positional embedding"}.get(kind, kind)


def _groups(nodes: ResidualNodes) -> list[str]:
    return [node_group(k, l, i) for k, l, i in zip(nodes.kind, nodes.layer, nodes.index)] + ["constant"]


def _grouped(pairs: torch.Tensor, rows: list[str], cols: list[str], row_names: list[str], col_names: list[str]) -> torch.Tensor:
    R = torch.zeros(len(row_names), len(rows), dtype=torch.float64)
    R[[row_names.index(r) for r in rows], torch.arange(len(rows))] = 1.0
    C = torch.zeros(len(cols), len(col_names), dtype=torch.float64)
    C[torch.arange(len(cols)), [col_names.index(c) for c in cols]] = 1.0
    return R @ pairs.double() @ C


def _label(model, kind: str, layer: int, index: int, pos: int) -> str:
    if kind == "feature":
        return f"feature L{layer}#{index}"
    if kind == "embedding":
        return f"the embedding of {str_tokens(model, [index])[0]!r}"
    if kind == "constant":
        return "the constant"
    return node_group(kind, layer, index)


@torch.no_grad()
def feature_inputs(prep, nodes: ResidualNodes, pos: int, weights: torch.Tensor) -> dict[str, float]:
    """What drives a side's features: each feature's pre-activation split over the nodes at ``pos`` that its
    transcoder reads (the embeddings, earlier heads' outputs incl. its own layer's, earlier features and errors;
    constants left out), weighted by ``weights`` (one per node of ``nodes``, 0 for non-features), by node group."""
    model, views = prep.model, prep.views
    out: dict[str, float] = {}
    for layer in sorted({l for k, l in zip(nodes.kind, nodes.layer) if k == "feature"}):
        picked = [n for n, (k, l) in enumerate(zip(nodes.kind, nodes.layer)) if k == "feature" and l == layer and weights[n] > 0]
        if not picked:
            continue
        src = residual_nodes(model, views, prep.cache, layer + 1, pos)
        keep = [n for n, (k, l) in enumerate(zip(src.kind, src.layer)) if k != "bias" and not (l == layer and k in ("feature", "error"))]
        vecs = src.vectors[keep]
        if views[layer].hook_in.endswith("hook_normalized") and model.blocks[layer].ln2.centered:
            vecs = vecs - vecs.mean(-1, keepdim=True)  # the frozen ln2's scale is common to all: shares unchanged
        enc = views[layer].W_enc[:, [nodes.index[n] for n in picked]]  # [d_model, k]
        contrib = (vecs @ enc) @ weights[picked].to(enc)  # [sources]
        for n, c in zip(keep, contrib.tolist()):
            name = node_group(src.kind[n], src.layer[n], src.index[n])
            out[name] = out.get(name, 0.0) + c
    return out


def _driver(prep, nodes: ResidualNodes, pos: int, weights: torch.Tensor, group: str) -> Optional[tuple[str, float]]:
    """(the node group that mostly drives a side's feature group, its share of their input there), or None."""
    if not group.endswith(" features"):
        return None
    inputs = feature_inputs(prep, nodes, pos, weights)
    total = sum(abs(v) for v in inputs.values())
    if not inputs or total <= 0:
        return None
    name, value = max(inputs.items(), key=lambda kv: kv[1])
    return name, value / total


def _drivers_text(q_why, k_why, q_group: str, k_group: str) -> str:
    parts = []
    for why, side, group in ((q_why, "query", q_group), (k_why, "key", k_group)):
        if why is not None:
            parts.append(f"the {side}'s {group} read mostly the {why[0]} at that position ({100 * why[1]:.0f}% of their input there)")
    text = "; ".join(parts)
    return f" {text[:1].upper()}{text[1:]}." if parts else ""


def _share(value: float, total: float) -> str:
    return f"{100 * value / total:.0f}%"


def qk_attribution(model, request: QKAttributionRequest, transcoders=None) -> QKAttributionResult:
    """``transcoders``: a TranscoderSet to use instead of ``load_transcoders(model)`` (tests, your own)."""
    from lens_core.features import load_transcoders

    tokens = resolve_tokens(model, request.prompt, request.tokens)
    n_pos = tokens.shape[-1]
    i = request.query_pos + n_pos if request.query_pos < 0 else request.query_pos
    tset = transcoders if transcoders is not None else load_transcoders(model)
    prep = prepare(model, tset, tokens, int(request.layer))
    layer, head = int(request.layer), int(request.head)
    if not 0 <= i < n_pos:
        raise ValueError(f"query position {request.query_pos} is outside the prompt's {n_pos} positions")
    if not 0 <= head < model.cfg.n_heads:
        raise ValueError(f"head {head} is out of range (layer {layer} has {model.cfg.n_heads} heads)")
    pattern = prep.cache[f"blocks.{layer}.attn.hook_pattern"][0, head, i].float()
    j = int(pattern.argmax()) if request.key_pos is None else int(request.key_pos)
    split = split_prepared(prep, head, i, j)

    rows, cols = _groups(split.query), _groups(split.key)
    lo = max(0, i - model.cfg.window_size + 1) if model.blocks[layer].attn.local else 0
    visible = [k for k in range(lo, i + 1) if k != j]  # the other keys the query sees (causal, sliding window)
    others = [split_prepared(prep, head, i, k) for k in visible]
    row_names = list(dict.fromkeys(rows))
    col_names = list(dict.fromkeys(cols + [c for o in others for c in _groups(o.key)]))
    raw = _grouped(split.pairs, rows, cols, row_names, col_names)
    mean_other = torch.zeros_like(raw)
    for o in others:
        mean_other += _grouped(o.pairs, rows, _groups(o.key), row_names, col_names) / len(others)
    baseline = sum(o.score for o in others) / len(others) if others else split.score
    contrast = raw - mean_other if others else raw

    flat = split.pairs.flatten()
    top = flat.abs().topk(min(int(request.top_pairs), flat.numel())).indices
    n_k = split.pairs.shape[1]
    top_q, top_k = [int(t) // n_k for t in top], [int(t) % n_k for t in top]
    q_kind, k_kind = split.query.kind + ["constant"], split.key.kind + ["constant"]
    q_layer, k_layer = split.query.layer + [-1], split.key.layer + [-1]
    q_index, k_index = split.query.index + [-1], split.key.index + [-1]

    toks = str_tokens(model, tokens[0].tolist())
    excess = split.score - baseline
    lead = (f"L{layer}H{head} attends from position {i} ({toks[i]!r}) to position {j} ({toks[j]!r}) with weight "
            f"{split.pattern:.2f}; its score there is {split.score:.2f}")
    inside = torch.ones_like(split.pairs, dtype=torch.bool)
    if others and excess > 0:
        order = contrast.flatten().argsort(descending=True)
        a, b = divmod(int(order[0]), len(col_names))
        a2, b2 = divmod(int(order[1]), len(col_names))
        inside = torch.tensor([[r == row_names[a] and c == col_names[b] for c in cols] for r in rows])
        part = split.pairs * inside  # the dominant pair's own node pairs
        q_why = _driver(prep, split.query, i, part.sum(1)[:-1], row_names[a])
        k_why = _driver(prep, split.key, j, part.sum(0)[:-1], col_names[b])
        text = (f"{lead}, {excess:.2f} above its mean over the other {len(others)} keys. "
                f"Of that excess, {_share(float(contrast[a, b]), excess)} comes from the pair ({row_names[a]} at the query) x "
                f"({col_names[b]} at the key).{_drivers_text(q_why, k_why, row_names[a], col_names[b])}"
                f" Next: ({row_names[a2]} at the query) x ({col_names[b2]} at the key), "
                f"{_share(float(contrast[a2, b2]), excess)}.")
    elif others:
        text = f"{lead}, not above its mean over the other {len(others)} keys ({baseline:.2f}): this key is not preferred."
    else:
        text = f"{lead}; it is the only key the query sees (weight 1 whatever the score)."
    best = int(torch.where(inside, split.pairs, torch.full_like(split.pairs, -float("inf"))).flatten().argmax())
    qa, kb = divmod(best, n_k)
    text += (f" The strongest single pair{' in it' if others and excess > 0 else ''}: {_label(model, q_kind[qa], q_layer[qa], q_index[qa], i)} at the query x "
             f"{_label(model, k_kind[kb], k_layer[kb], k_index[kb], j)} at the key ({float(split.pairs[qa, kb]):+.2f}).")

    return QKAttributionResult(
        layer=layer, head=head, query_pos=i, key_pos=j, score=split.score, pattern=split.pattern, baseline=float(baseline),
        query_kind=q_kind, query_layer=q_layer, query_index=q_index, key_kind=k_kind, key_layer=k_layer, key_index=k_index,
        pairs=split.pairs.float(), top_query=top_q, top_key=top_k, top_value=[float(flat[t]) for t in top],
        query_groups=row_names, key_groups=col_names, group_raw=raw.float(), group_contrast=contrast.float(),
        summary=text, str_tokens=toks, token_ids=tokens[0].tolist(),
        settings={"layer": layer, "head": head, "query_pos": request.query_pos, "key_pos": request.key_pos,
                  "top_pairs": request.top_pairs},
    )
