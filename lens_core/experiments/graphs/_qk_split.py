"""Why a head attends where it does: one attention score split exactly into node pairs (QK attribution).

The attribution graph freezes attention patterns; this explains one of them. For head ``h`` of
layer ``l``, query position ``i`` and key position ``j``, the residual stream before the layer at
each position is exactly the sum of the replacement model's node outputs there:

- ``embedding``: the token embedding (``hook_embed``); ``pos_embed``: the positional embedding;
- ``feature``: an active transcoder feature of an earlier layer, ``activation * W_dec[feature]``; a cross-layer
  transcoder's feature: its writes into every layer before this one, summed;
- ``error``: what that layer's transcoder misses (``hook_mlp_out`` minus the reconstruction); with a skip
  transcoder, the skip term ``x @ W_skip`` (a function of the residual, not a source) is part of it;
- ``head``: an earlier layer's attention head output ``z[h'] @ W_O[h']`` (through ``ln1_post``'s
  frozen scale where the family has that norm);
- ``bias``: an earlier layer's constant writes (``b_O`` and the transcoder's ``b_dec``).

With ``ln1``'s scale frozen at the two positions (as the graph freezes it) the norm is linear, so
the query ``q_i = R_i W_Q^T ln1(x_i) + R_i b`` is a sum of one vector per node at ``i`` plus a
constant (``ln1``'s bias through ``W_Q`` plus ``b_Q``), and the same for the key at ``j``; ``R_i``
is the rotary rotation at position ``i`` (linear, so it is applied to each node's part). The
pre-softmax score ``q_i . k_j / attn_scale`` is then exactly

    sum over (query node a, key node b) of  q_a . k_b / attn_scale
    + (query constant) . k_b terms + q_a . (key constant) terms + constant . constant,

the ``pairs`` matrix of the result: rows the query-side nodes then the query constant, columns the
key-side nodes then the key constant. Its sum is the real model's ``hook_attn_scores`` (tests: within
1e-4 on the bundled model, tiny GPT-2 and Llama-shaped models).

Refused with a clear message rather than approximated: q/k norms (a per-head RMSNorm of the query is
not linear in the nodes, and its scale is not one of the graph's frozen norms), soft-capped scores
(Gemma 2), a key the query cannot see (causal mask, sliding window), and parallel attention + MLP.

On the bundled model's induction preset, the induction head L1H3's score from the last token to the
token after the earlier copy of the current word is dominated by the pair (previous-token head L0H0's
output at the key position) x (the current token's embedding at the query position): the query asks
"which position was preceded by my token", the key answers with what L0H0 copied from the previous
position. ``summary`` says which pair dominates and its share of the score in words.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.rotary import apply_rotary, rotary_cos_sin
from ._dictionary_views import LayerDictionary, dictionary_views
from ._replacement import transcoder_views
from ._transcoder_views import float32_activations


@dataclasses.dataclass
class ResidualNodes:
    """The node outputs that sum to the residual stream before a layer, at one position."""

    kind: list  # embedding | pos_embed | feature | error | head | bias
    layer: list  # -1 for embeddings
    index: list  # feature index, head index, token id (embedding), position (pos_embed); -1 otherwise
    vectors: torch.Tensor  # [n, d_model]


def unsupported_reason(model, layer: int) -> Optional[str]:
    """Why the exact split is not available for this model's ``layer`` (None: it is)."""
    cfg = model.cfg
    if cfg.qk_norm is not None:
        return (f"this model normalises each query and key (q/k norm, {cfg.qk_norm!r}) before the score: that norm is "
                "not linear in the residual stream's nodes, so the score cannot be split exactly into node pairs")
    if cfg.attn_scores_soft_cap > 0:
        return ("this model soft-caps its attention scores (cap * tanh(score / cap)), which is not linear: "
                "the score cannot be split exactly into node pairs")
    if cfg.positional_embedding_type == "shortformer":
        return ("this model adds its positions to the queries and keys only (shortformer), not to the residual stream: "
                "QK attribution does not split such scores yet")
    if cfg.parallel_attn_mlp:
        return "QK attribution needs sequential attention then MLP (this model runs them in parallel)"
    if not 0 <= layer < cfg.n_layers:
        return f"layer {layer} is out of range (the model has {cfg.n_layers} layers)"
    return None


def _frozen_norm(norm, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The linear part of a norm with its scale frozen: ``centre(x) / scale * w`` (x [..., d], scale [..., 1])."""
    if norm is None:
        return x
    if norm.centered:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    return x * norm.w.float() if norm.has_weights else x


def _norm_bias(norm, d: int, device) -> torch.Tensor:
    b = getattr(norm, "b", None) if norm is not None else None
    return b.float() if b is not None else torch.zeros(d, device=device)


def _cache_names(model, layer: int, views) -> list[str]:
    names = ["hook_embed", "hook_pos_embed", f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.ln1.hook_scale",
             f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
    for l in range(layer):
        names += [f"blocks.{l}.attn.hook_z", f"blocks.{l}.ln1_post.hook_scale", f"blocks.{l}.hook_mlp_out", views[l].hook_in]
    return sorted(set(names) & set(model.hook_dict))


def _dictionary_nodes(views, acts, cache, layer: int, pos: int, l: int, consts, lists):
    """Layer ``l``'s feature, error and bias nodes at ``pos`` from ``_dictionary_views`` (module docstring);
    ``acts[s]``: layer ``s``'s activations at ``pos`` [F], for every ``s <= l``."""
    kind, lay, index, vecs = lists
    v = views[l]
    for f in acts[l].nonzero()[:, 0].tolist():
        reach = min(v.W_dec.shape[1], layer - l)  # the layers before this one that the feature writes
        kind.append("feature"), lay.append(l), index.append(int(f)), vecs.append(acts[l][f] * v.W_dec[f, :reach].sum(0))
    recon = v.b_dec + sum(acts[s] @ views[s].W_dec[:, l - s] for s in range(l + 1) if l - s < views[s].W_dec.shape[1])
    kind.append("error"), lay.append(l), index.append(-1), vecs.append(cache[f"blocks.{l}.hook_mlp_out"][0, pos].float() - recon)
    kind.append("bias"), lay.append(l), index.append(-1), vecs.append(consts + v.b_dec)
    return kind, lay, index, vecs


def residual_nodes(model, views, cache, layer: int, pos: int) -> ResidualNodes:
    """The nodes at ``pos`` whose outputs sum to ``blocks.{layer}.hook_resid_pre`` there (frozen norms)."""
    kind, lay, index, vecs = ["embedding"], [-1], [int(cache["tokens"][pos])], [cache["hook_embed"][0, pos].float()]
    if "hook_pos_embed" in cache:
        kind.append("pos_embed"), lay.append(-1), index.append(pos), vecs.append(cache["hook_pos_embed"][0, pos].float())
    dict_acts = None
    for l in range(layer):
        block = model.blocks[l]
        z = cache[f"blocks.{l}.attn.hook_z"][0, pos].float()  # [head, d_head]
        heads = torch.einsum("he,hed->hd", z, block.attn.W_O.float())
        consts = block.attn.b_O.float()
        if block.ln1_post is not None:
            post_scale = cache[f"blocks.{l}.ln1_post.hook_scale"][0, pos].float()  # [1]
            heads = _frozen_norm(block.ln1_post, post_scale, heads)
            consts = _frozen_norm(block.ln1_post, post_scale, consts) + _norm_bias(block.ln1_post, heads.shape[-1], heads.device)
        for hh in range(heads.shape[0]):
            kind.append("head"), lay.append(l), index.append(hh), vecs.append(heads[hh])
        if isinstance(views[l], LayerDictionary):  # skip or cross-layer transcoders
            if dict_acts is None:  # every layer's activations at pos, once: each reconstruction reads the earlier ones
                dict_acts = [views[s].encode(cache[views[s].hook_in][0, pos : pos + 1].float())[0] for s in range(layer)]
            kind, lay, index, vecs = _dictionary_nodes(views, dict_acts, cache, layer, pos, l, consts,
                                                       (kind, lay, index, vecs))
            continue
        v = views[l]
        x = cache[v.hook_in][0, pos : pos + 1].float()
        acts = float32_activations(v.module, x, (x - v.b_in) @ v.W_enc + v.b_enc)[0]  # [d_sae]
        active = acts.nonzero()[:, 0]
        for f in active.tolist():
            kind.append("feature"), lay.append(l), index.append(int(f)), vecs.append(acts[f] * v.W_dec[f])
        recon = acts[active] @ v.W_dec[active] + v.b_dec
        kind.append("error"), lay.append(l), index.append(-1), vecs.append(cache[f"blocks.{l}.hook_mlp_out"][0, pos].float() - recon)
        kind.append("bias"), lay.append(l), index.append(-1), vecs.append(consts + v.b_dec)
    return ResidualNodes(kind, lay, index, torch.stack(vecs))


def _side(model, layer: int, head: int, nodes: ResidualNodes, scale: torch.Tensor, pos: int, n_pos: int, which: str):
    """Each node's part of the query (or key) of ``head`` at ``pos``, and the constant part: ([n, d_head], [d_head])."""
    cfg, block = model.cfg, model.blocks[layer]
    attn = block.attn
    if which == "q":
        W, b = attn.W_Q[head].float(), attn.b_Q[head].float()
    else:
        kv = head // cfg.n_kv_groups
        W, b = attn.W_K[kv].float(), attn.b_K[kv].float()
    parts = _frozen_norm(block.ln1, scale, nodes.vectors) @ W  # [n, d_head]
    const = _norm_bias(block.ln1, cfg.d_model, W.device) @ W + b
    if cfg.positional_embedding_type == "rotary":
        cos, sin = rotary_cos_sin(cfg, n_pos, W.device, local=attn.local)
        rotate = lambda x: apply_rotary(x[None, :, None, :], cos[pos : pos + 1], sin[pos : pos + 1])[0, :, 0]
        parts, const = rotate(parts), rotate(const[None])[0]
    return parts, const


@dataclasses.dataclass
class ScoreSplit:
    query: ResidualNodes
    key: ResidualNodes
    pairs: torch.Tensor  # [n_query + 1, n_key + 1]; last row / column: the query / key constant
    score: float  # the real model's pre-softmax score (hook_attn_scores)
    pattern: float  # the real attention weight


@dataclasses.dataclass
class Prepared:
    """One forward pass's cache and the transcoders, reused for every (head, query, key) split of one layer."""

    model: object
    views: list
    cache: dict
    layer: int
    n_pos: int
    scales: torch.Tensor  # [pos, 1]: ln1's frozen scale at the layer (ones without the norm)


@torch.no_grad()
def prepare(model, transcoders, tokens: torch.Tensor, layer: int) -> Prepared:
    reason = unsupported_reason(model, layer)
    if reason:
        raise ValueError(reason)
    views = transcoder_views(model, transcoders)
    if views is None:  # skip or cross-layer transcoders
        views = dictionary_views(model, transcoders)
    _, cache = model.run_with_cache(tokens, names_filter=_cache_names(model, layer, views))
    cache = dict(cache.items())
    cache["tokens"] = tokens[0]
    n_pos = tokens.shape[-1]
    name = f"blocks.{layer}.ln1.hook_scale"
    scales = cache[name][0].float() if name in cache else torch.ones(n_pos, 1, device=tokens.device)
    return Prepared(model, views, cache, layer, n_pos, scales)


def check_positions(model, layer: int, head: int, query_pos: int, key_pos: int, n_pos: int) -> None:
    cfg = model.cfg
    if not 0 <= head < cfg.n_heads:
        raise ValueError(f"head {head} is out of range (layer {layer} has {cfg.n_heads} heads)")
    if not (0 <= query_pos < n_pos and 0 <= key_pos < n_pos):
        raise ValueError(f"positions must be in 0..{n_pos - 1}; got query {query_pos}, key {key_pos}")
    if key_pos > query_pos:
        raise ValueError(f"the query at position {query_pos} cannot see the later key at {key_pos} (causal attention)")
    if model.blocks[layer].attn.local and key_pos <= query_pos - cfg.window_size:
        raise ValueError(f"layer {layer} attends within a window of {cfg.window_size} keys: "
                         f"the key at {key_pos} is outside the window of the query at {query_pos}")


@torch.no_grad()
def split_prepared(prep: Prepared, head: int, query_pos: int, key_pos: int) -> ScoreSplit:
    model, layer = prep.model, prep.layer
    check_positions(model, layer, head, query_pos, key_pos, prep.n_pos)
    q_nodes = residual_nodes(model, prep.views, prep.cache, layer, query_pos)
    k_nodes = residual_nodes(model, prep.views, prep.cache, layer, key_pos)
    q_parts, q_const = _side(model, layer, head, q_nodes, prep.scales[query_pos], query_pos, prep.n_pos, "q")
    k_parts, k_const = _side(model, layer, head, k_nodes, prep.scales[key_pos], key_pos, prep.n_pos, "k")
    Q = torch.cat([q_parts, q_const[None]]) / model.cfg.attn_scale
    K = torch.cat([k_parts, k_const[None]])
    return ScoreSplit(
        query=q_nodes, key=k_nodes, pairs=(Q @ K.T).cpu(),
        score=float(prep.cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, query_pos, key_pos]),
        pattern=float(prep.cache[f"blocks.{layer}.attn.hook_pattern"][0, head, query_pos, key_pos]),
    )


def split_score(model, transcoders, tokens: torch.Tensor, layer: int, head: int, query_pos: int, key_pos: int) -> ScoreSplit:
    """The exact pair decomposition of head ``layer.head``'s score from ``query_pos`` to ``key_pos`` (module docstring)."""
    return split_prepared(prepare(model, transcoders, tokens, layer), head, query_pos, key_pos)
