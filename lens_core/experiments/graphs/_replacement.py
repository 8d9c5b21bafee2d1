"""The frozen replacement model of one prompt, and its exact linear attribution graph.

Replace each MLP by its transcoder plus an error term (what the transcoder misses on this
prompt, so the replacement reproduces the real model exactly), and freeze the attention
patterns and every norm's scale at the values of one real forward pass. What is left
between the residual stream's writers and readers is linear: attention with a fixed
pattern is a linear map of the values, a norm with a fixed scale is centring (LayerNorm)
and a division. So each node's input is exactly the sum of its incoming edges plus
constant terms (biases, positional embeddings).

Nodes, in this order (the rows and columns of ``adjacency``):
- features: every transcoder feature active at some position, sorted by (layer, pos, feature);
  its *input* is its pre-activation, its *output* ``activation * W_dec[feature]`` written at
  ``hook_mlp_out`` of its layer;
- errors: one per (layer, pos): ``mlp_out - transcoder reconstruction`` (its output; no input);
- embeddings: one per position: the token embedding (``hook_embed``; positional embeddings
  count as a constant);
- logits: the target tokens at the last position; input = the logit minus the mean logit
  over the vocabulary (the published method's demeaned logit). With final-logit soft-capping
  (Gemma 2) it is the logit *before* the cap (``c * tanh(x / c)`` is not linear); ``logit_probs``
  are still the model's real, capped probabilities.

Post-sublayer norms (Gemma, OLMo 2) are frozen like the others: ``ln1_post``'s scale per query
position (its weight folded into ``W_O``); ``ln2_post`` sits inside what the transcoder replaces
(it writes ``hook_mlp_out``, after that norm). Models without pre-sublayer norms (OLMo 2) read the
residual directly: their transcoders read ``hook_resid_mid``. q/k norms, soft-capped scores and
sliding windows only shape the attention patterns, which are frozen.

Skip transcoders and cross-layer transcoders: the same nodes and rows, by ``_clt_walk`` (``prepare_walk`` hands
them over). The frozen model shared by both walks: ``_frozen``.

``adjacency[t, s]`` is source ``s``'s output carried to target ``t``'s input through the
frozen attention and the residual stream (no path through another feature: that path is two
edges). All targets' gradients come from one backward walk per group of targets (all rows at
once as a batch, grouped by the layer the target reads), written out as the transposed
frozen model: at each layer, ``g += attnT(g)`` with the frozen pattern.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from ._frozen import embedding_rows, forward, freeze, logit_seeds
from ._frozen import norm_t as _norm_t
from ._targets import node_budget_error, select_logits  # noqa: F401 (their old home)
from ._transcoder_views import TranscoderView, float32_activations, transcoder_views  # noqa: F401 (their old home)

# Dense adjacency: n_nodes^2 floats. 8192 nodes are 256 MiB of float32 per graph.
DEFAULT_MAX_NODES = 8192


@dataclasses.dataclass
class ReplacementGraph:
    """The full (unpruned) graph of one prompt. Node order: features, errors, embeddings, logits."""

    tokens: torch.Tensor  # [pos]
    feature_layer: torch.Tensor  # [n_features]
    feature_pos: torch.Tensor  # [n_features]
    feature_index: torch.Tensor  # [n_features]
    activations: torch.Tensor  # [n_features]
    logit_tokens: torch.Tensor  # [n_logits]
    logit_probs: torch.Tensor  # [n_logits]
    adjacency: torch.Tensor  # [n_nodes, n_nodes]: rows targets, columns sources
    node_input: torch.Tensor  # [n_nodes]: pre-activation (features), demeaned logit (logits), 0 otherwise
    node_bias: torch.Tensor  # [n_nodes]: the constant part of each input (biases, positional embeddings)
    n_layers: int
    dropped: Optional[torch.Tensor] = None  # [n_nodes] with a feature budget: input from features left out (_expand)
    logit_minus: Optional[int] = None  # a direction target: the one logit node is logit(logit_tokens[0]) - logit(this)

    @property
    def n_features(self) -> int:
        return int(self.feature_layer.numel())

    @property
    def n_pos(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.numel())

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    def error_node(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def embedding_node(self, pos: int) -> int:
        return self.n_features + self.n_errors + pos

    def logit_node(self, i: int) -> int:
        return self.n_features + self.n_errors + self.n_pos + i

    def kinds(self) -> list[str]:
        return ["feature"] * self.n_features + ["error"] * self.n_errors + ["embedding"] * self.n_pos + ["logit"] * self.n_logits


@dataclasses.dataclass
class Walk:
    """Everything but the edges: the nodes of the full graph, and ``rows(L, idx, out)``, which writes the
    incoming edges of target rows into ``out [len(idx), n_nodes]`` (zeros) and returns their bias. ``L < n_layers``:
    ``idx`` are feature nodes of layer ``L``; ``L == n_layers``: ``idx`` are logits (0 .. n_logits - 1)."""

    partial: ReplacementGraph  # adjacency and node_bias empty
    first: list  # feature nodes of layer l are [first[l], first[l + 1])
    rows: object
    device: torch.device
    cache: object = None  # the clean run's cache (``_frozen.forward``): what a forward-run prediction can reuse


@torch.no_grad()
def build_graph(
    model,
    transcoders,
    tokens: torch.Tensor,
    targets: Optional[Sequence[int]] = None,
    logit_mass: float = 0.95,
    max_logits: int = 10,
    max_nodes: int = DEFAULT_MAX_NODES,
    batch_size: int = 256,
    minus: Optional[int] = None,
    zero_bos: bool = False,
) -> ReplacementGraph:
    """The full attribution graph of ``tokens [1, pos]`` at the last position (see the module docstring).
    ``minus``: with one target x, the target is the direction logit(x) - logit(minus) instead. ``zero_bos``:
    circuit-tracer's convention at position 0 (see ``prepare_walk``)."""
    walk = prepare_walk(model, transcoders, tokens, targets, logit_mass, max_logits, minus, zero_bos)
    g = walk.partial
    if g.n_nodes > max_nodes:
        raise ValueError(node_budget_error(g.n_nodes, max_nodes, g.n_pos, g.n_nodes / g.n_pos))
    return fill_dense(walk, batch_size)


def fill_dense(walk: Walk, batch_size: int = 256) -> ReplacementGraph:
    """Every row of the walk's graph, dense. Target groups (contiguous rows): features of layer L, by position,
    read resid_mid[L]; then the logits."""
    g, first = walk.partial, walk.first
    n, n_nodes, logit0 = g.n_layers, g.n_nodes, g.logit_node(0)
    device = walk.device
    adjacency = torch.zeros(n_nodes, n_nodes, device=device)
    node_bias = torch.zeros(n_nodes, device=device)
    chunks = [(L, r, min(r + batch_size, first[L + 1])) for L in range(n) for r in range(first[L], first[L + 1], batch_size)]
    for L, r0, r1 in chunks + [(n, logit0, n_nodes)]:
        if r1 == r0:
            continue
        idx = torch.arange(r0, r1, device=device) - (logit0 if L == n else 0)
        node_bias[r0:r1] = walk.rows(L, idx, adjacency[r0:r1])
    return dataclasses.replace(g, adjacency=adjacency.cpu(), node_bias=node_bias.cpu())


@torch.no_grad()
def prepare_walk(model, transcoders, tokens: torch.Tensor, targets: Optional[Sequence[int]] = None,
                 logit_mass: float = 0.95, max_logits: int = 10, minus: Optional[int] = None,
                 zero_bos: bool = False) -> Walk:
    """One forward pass and the frozen model's matrices: the nodes of the full graph, and its row function.

    ``zero_bos`` (circuit-tracer 0.5's convention): no feature at position 0 is a node and the error nodes at
    position 0 carry nothing (zero edges); what the MLPs write there (the real ``hook_mlp_out``, the same for
    every prompt that starts with the same BOS token) counts as a constant, in the targets' bias, so each input
    is still exactly its edges plus its bias. Position 0's token embedding stays a node."""
    cfg = model.cfg
    views = transcoder_views(model, transcoders)
    if views is None:  # skip or cross-layer transcoders: the general walk
        from ._clt_walk import prepare_dictionary_walk

        return prepare_dictionary_walk(model, transcoders, tokens, targets, logit_mass, max_logits, minus, zero_bos)
    n, P, d = cfg.n_layers, tokens.shape[1], cfg.d_model
    cache, last, probs, logit_tokens = forward(model, [v.hook_in for v in views], tokens, targets, logit_mass, max_logits)

    # ---- the nodes: active features (and their inputs), errors, embeddings
    f_layer, f_pos, f_idx, f_act, f_pre = [], [], [], [], []
    errors = torch.empty(n, P, d, device=last.device)
    bos_const = torch.zeros(n, d, device=last.device)  # with zero_bos: what position 0's error would carry
    for l, v in enumerate(views):
        x = cache[v.hook_in][0].float()  # [pos, d_model]
        pre = (x - v.b_in) @ v.W_enc + v.b_enc
        acts = float32_activations(v.module, x, pre)  # [pos, d_sae]
        if zero_bos:
            acts[0] = 0.0
        pos_i, feat_i = acts.nonzero(as_tuple=True)
        f_layer.append(torch.full_like(pos_i, l))
        f_pos.append(pos_i)
        f_idx.append(feat_i)
        f_act.append(acts[pos_i, feat_i])
        f_pre.append(pre[pos_i, feat_i])
        errors[l] = cache[f"blocks.{l}.hook_mlp_out"][0].float() - (acts @ v.W_dec + v.b_dec)
        if zero_bos:  # position 0's whole MLP output is a constant (below); its error node carries nothing
            bos_const[l] = errors[l, 0].clone()
            errors[l, 0] = 0.0
    f_layer, f_pos, f_idx = torch.cat(f_layer), torch.cat(f_pos), torch.cat(f_idx)
    f_act, f_pre = torch.cat(f_act), torch.cat(f_pre)
    n_feat, n_logits = f_layer.numel(), logit_tokens.numel()
    n_nodes = n_feat + n * P + P + n_logits
    err0, emb0, logit0 = n_feat, n_feat + n * P, n_feat + n * P + P

    fz = freeze(model, cache, P, last.device)
    centered, scale2, scale_f, attn_const = fz.centered, fz.scale2, fz.scale_f, fz.attn_const
    attn_t, attn_t_one = fz.attn_t, fz.attn_t_one

    # Sources written at resid_post[l], as columns of one batched product per layer: each position's
    # scaled decoder rows of the layer's active features (padded to ``slots``), then the error vector,
    # then the constants (b_dec + the next attention's bias, the same at every position). Features of
    # a layer are the contiguous node range [first[l], first[l+1]), sorted by position.
    first = [0]
    for l in range(n):
        first.append(first[-1] + int((f_layer == l).sum()))
    src, flat_slot, upto, n_slots = [], [], [], []
    for l in range(n):
        lo, hi = first[l], first[l + 1]
        pos_l = f_pos[lo:hi]
        counts = torch.bincount(pos_l, minlength=P)
        slots = int(counts.max()) if counts.numel() else 0
        slot = torch.arange(hi - lo, device=pos_l.device) - (torch.cumsum(counts, 0) - counts)[pos_l]
        pad = torch.zeros(P, slots + 2, d, device=last.device)
        pad[pos_l, slot] = views[l].W_dec[f_idx[lo:hi]] * f_act[lo:hi, None]
        pad[:, slots] = errors[l]
        pad[:, slots + 1] = views[l].b_dec + attn_const[l]
        if zero_bos:
            pad[0, slots + 1] += bos_const[l]
        src.append(pad.transpose(1, 2).contiguous())  # [pos, d_model, slots + 2]
        flat_slot.append(pos_l * (slots + 2) + slot)
        upto.append(torch.cumsum(counts, 0))  # features of this layer at positions <= p
        n_slots.append(slots)
    logit_dirs, logit_const, demeaned, ids = logit_seeds(model, logit_tokens, minus, last)
    lnf_w = fz.lnf_w

    node_input = torch.zeros(n_nodes, device=last.device)
    node_input[:n_feat] = f_pre
    node_input[logit0:] = demeaned[ids]

    def rows_of(L: int, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """g is the gradient of each row's input, position-major [pos, row, d_model]."""
        B = idx.numel()
        if L < n:
            pos_r = f_pos[idx]
            q = int(pos_r.max()) + 1
            v = views[L]
            enc = v.W_enc[:, f_idx[idx]].T  # [B, d_model]
            if v.hook_in.endswith("ln2.hook_normalized"):
                enc = _norm_t(enc, scale2[L][pos_r], centered, None)
            bias = v.b_enc[f_idx[idx]] - (v.b_in @ v.W_enc[:, f_idx[idx]])
            bias = bias + (enc * attn_const[L][pos_r]).sum(-1)  # layer L's attention writes resid_mid[L]
            g = attn_t_one(L, enc, pos_r, q)
            g[pos_r, torch.arange(B)] += enc
            top = L - 1
        else:
            q = P
            g = torch.zeros(q, B, d, device=last.device)
            g[-1] = _norm_t(logit_dirs.T[:, idx].T, scale_f[-1], centered, lnf_w)  # the same memory layout as logit_dirs
            bias = logit_const[idx]
            top = n - 1
        for l in range(top, -1, -1):
            # g: gradient at resid_post[l], where layer l's features, error and constants write.
            out = torch.bmm(g, src[l][:q])  # [q, B, slots + 2]
            slots, count = n_slots[l], int(upto[l][q - 1])
            if count:
                feats = out[:, :, :slots].permute(1, 0, 2)  # [B, q, slots]
                if count == q * slots:  # every slot filled (top-k): no gather needed
                    rows[:, first[l] : first[l] + count] = feats.reshape(B, count)
                else:
                    flat = out.permute(1, 0, 2).reshape(B, q * (slots + 2))
                    rows[:, first[l] : first[l] + count] = flat[:, flat_slot[l][:count]]
            rows[:, err0 + l * P : err0 + l * P + q] = out[:, :, slots].T
            bias = bias + out[:, :, slots + 1].sum(0)
            if l > 0:
                g = g + attn_t(l, g)
        return bias + embedding_rows(fz, g, rows, emb0, q, top)

    return finish_walk(tokens, (f_layer, f_pos, f_idx, f_act), logit_tokens, probs[ids], node_input, n, minus, first,
                       rows_of, last.device, cache)


def finish_walk(tokens, features: tuple, logit_tokens, logit_probs, node_input, n_layers: int, minus, first, rows,
                device, cache) -> Walk:
    """Both walks' ``Walk``: the nodes (``features``: layer, position, index, activation of each) without edges."""
    f_layer, f_pos, f_idx, f_act = features
    empty = torch.zeros(0)
    partial = ReplacementGraph(
        tokens=tokens[0].cpu(), feature_layer=f_layer.cpu(), feature_pos=f_pos.cpu(), feature_index=f_idx.cpu(),
        activations=f_act.cpu(), logit_tokens=logit_tokens.cpu(), logit_probs=logit_probs.cpu(),
        adjacency=empty, node_input=node_input.cpu(), node_bias=empty, n_layers=n_layers,
        logit_minus=None if minus is None else int(minus),
    )
    return Walk(partial=partial, first=first, rows=rows, device=device, cache=cache)
