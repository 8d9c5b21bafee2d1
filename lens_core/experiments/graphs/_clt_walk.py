"""The attribution graph's walk for skip transcoders and cross-layer transcoders (CLTs).

The same frozen replacement model as ``_replacement`` (frozen attention patterns and norm scales, each MLP
replaced by its dictionary plus an error term), with two more linear pieces:

- a **cross-layer** feature of layer ``s`` writes ``act * W_dec[s][f, t - s]`` at ``hook_mlp_out`` of every
  layer ``t >= s``; its edge into a target is the sum over ``t`` of the target's gradient at ``resid_post[t]``
  dotted with that decoder row. Its node is ``(layer s, pos, feature)``; layer ``t``'s error node is
  ``mlp_out[t] - (sum_{s <= t} decoded + b_dec[t] (+ skip))``;
- a **skip** term ``x_t @ W_skip[t]`` (``x_t`` the dictionary's input: ``ln2.hook_normalized`` through the frozen
  ln2 scale, or ``hook_resid_mid``) is a linear path from ``resid_mid[t]`` to ``hook_mlp_out[t]``: it carries
  gradient like the residual does. In the walk, at ``resid_post[t]``, after the products with the sources written
  there: ``g += norm_t(g @ W_skip[t]^T)``, then layer ``t``'s attention constant (written at ``resid_mid[t]``) and
  the attention transpose. It is not a node (no activation of its own); the error node is what the
  reconstruction *with* the skip term misses.

Node order, ``ReplacementGraph`` and ``Walk`` are ``_replacement``'s, so pruning, the feature budget, scores and
checks run unchanged: each input is exactly its edges plus its bias.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._dictionary_views import dictionary_views
from ._frozen import embedding_rows, forward, freeze, logit_seeds, norm_t
from ._replacement import Walk, finish_walk


# Padded sources of a layer above this size are replaced by the unique active features' decoders (fewer bytes,
# more multiplications: every position against every active feature of the layer).
PADDED_BYTES = 256 * 2**20


class _Sources:
    """One source layer's active features as the walk multiplies them: ``edges(at_post, s, top, q, count)`` gives
    the edges ``[B, count]`` of its first ``count`` features (those at positions < q) into the rows whose gradient at
    ``resid_post[t]`` is ``at_post[t]`` ``[q, B, d]``, summed over the layers ``s .. top`` it writes.

    Padded (as ``_replacement``): per written layer, each position's activation-scaled decoder rows as columns of
    one batched product ``[pos, d, slots]`` (cost: positions x slots). Unique: the decoders of the distinct active
    features ``[d, U]``, every position against every one, then gathered and scaled (cost: positions x U)."""

    def __init__(self, W_dec, pos, feat, act, uniq, col, P):
        R, d = W_dec.shape[1], W_dec.shape[2]
        counts = torch.bincount(pos, minlength=P)
        slots = int(counts.max()) if counts.numel() else 0
        self.padded = R * P * slots * d * 4 <= PADDED_BYTES
        self.R = R
        if self.padded:
            slot = torch.arange(pos.numel(), device=pos.device) - (torch.cumsum(counts, 0) - counts)[pos]
            pad = torch.zeros(R, P, slots, d, device=W_dec.device)
            pad[:, pos, slot] = (W_dec[feat] * act[:, None, None]).transpose(0, 1)
            self.src = pad.transpose(2, 3).contiguous()  # [R, pos, d, slots]
            self.slots, self.flat = slots, pos * slots + slot
        else:
            self.dec = W_dec[uniq].permute(1, 2, 0).contiguous()  # [R, d, U]
            self.pos, self.col, self.act = pos, col, act

    def edges(self, at_post: dict, s: int, top: int, q: int, count: int) -> torch.Tensor:
        reach = range(min(self.R, top - s + 1))
        if self.padded:
            out = torch.bmm(at_post[s], self.src[0, :q])  # [q, B, slots]
            for r in reach[1:]:
                out += torch.bmm(at_post[s + r], self.src[r, :q])
            B = out.shape[1]
            if count == q * self.slots:
                return out.permute(1, 0, 2).reshape(B, count)
            return out.permute(1, 0, 2).reshape(B, q * self.slots)[:, self.flat[:count]]
        acc = at_post[s] @ self.dec[0]  # [q, B, U]
        for r in reach[1:]:
            acc += at_post[s + r] @ self.dec[r]
        return (acc[self.pos[:count], :, self.col[:count]] * self.act[:count, None]).T  # [B, count]


@torch.no_grad()
def prepare_dictionary_walk(model, transcoders, tokens: torch.Tensor, targets: Optional[Sequence[int]] = None,
                            logit_mass: float = 0.95, max_logits: int = 10, minus: Optional[int] = None,
                            zero_bos: bool = False) -> Walk:
    """``_replacement.prepare_walk`` for skip transcoders and cross-layer transcoders (module docstring)."""
    cfg = model.cfg
    views = dictionary_views(model, transcoders)
    n, P, d = cfg.n_layers, tokens.shape[1], cfg.d_model
    cache, last, probs, logit_tokens = forward(model, [v.hook_in for v in views], tokens, targets, logit_mass, max_logits)
    device = last.device
    fz = freeze(model, cache, P, device)
    normed = [v.hook_in.endswith("ln2.hook_normalized") for v in views]

    # ---- the nodes: active features of every layer, then what each layer's output misses
    x_in = [cache[v.hook_in][0].float() for v in views]
    f_layer, f_pos, f_idx, f_act, f_pre, sources, acts = [], [], [], [], [], [], []
    for s, v in enumerate(views):
        a = v.encode(x_in[s])  # [pos, F]
        if zero_bos:
            a[0] = 0.0
        pre = (x_in[s] - v.b_in) @ v.W_enc + v.b_enc
        pos_i, feat_i = a.nonzero(as_tuple=True)
        uniq, col = torch.unique(feat_i, return_inverse=True)
        f_layer.append(torch.full_like(pos_i, s))
        f_pos.append(pos_i)
        f_idx.append(feat_i)
        f_act.append(a[pos_i, feat_i])
        f_pre.append(pre[pos_i, feat_i])
        sources.append(_Sources(v.W_dec, pos_i, feat_i, a[pos_i, feat_i], uniq, col, P))
        acts.append(a)
    errors = torch.empty(n, P, d, device=device)
    const_post = torch.empty(n, P, d, device=device)  # what is constant at resid_post[t]: b_dec (+ BOS's output)
    for t in range(n):
        recon = views[t].b_dec[None, :].expand(P, d).clone()
        for s in range(t + 1):
            if t - s < views[s].W_dec.shape[1]:
                recon += acts[s] @ views[s].W_dec[:, t - s]
        if views[t].W_skip is not None:
            recon += x_in[t] @ views[t].W_skip
        errors[t] = cache[f"blocks.{t}.hook_mlp_out"][0].float() - recon
        const_post[t] = views[t].b_dec
        if zero_bos:  # position 0's output counts as a constant; its error node carries nothing
            const_post[t, 0] += errors[t, 0]
            errors[t, 0] = 0.0
    del acts
    W_skip_T = [v.W_skip.T.contiguous() if v.W_skip is not None else None for v in views]
    first = [0]
    for p in f_pos:
        first.append(first[-1] + p.numel())
    upto = [torch.cumsum(torch.bincount(p, minlength=P), 0) for p in f_pos]  # features of layer s at positions <= q
    f_layer, f_pos_all, f_idx_all = torch.cat(f_layer), torch.cat(f_pos), torch.cat(f_idx)
    f_act_all, f_pre_all = torch.cat(f_act), torch.cat(f_pre)
    n_feat, n_logits = f_layer.numel(), logit_tokens.numel()
    n_nodes = n_feat + n * P + P + n_logits
    err0, emb0, logit0 = n_feat, n_feat + n * P, n_feat + n * P + P

    logit_dirs, logit_const, demeaned, ids = logit_seeds(model, logit_tokens, minus, last)
    node_input = torch.zeros(n_nodes, device=device)
    node_input[:n_feat] = f_pre_all
    node_input[logit0:] = demeaned[ids]

    def rows_of(L: int, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``_replacement``'s row function: g is the gradient of each row's input, [pos, row, d_model]."""
        B = idx.numel()
        if L < n:
            pos_r, feat_r = f_pos_all[idx], f_idx_all[idx]
            q = int(pos_r.max()) + 1
            v = views[L]
            enc = v.W_enc[:, feat_r].T  # [B, d_model]
            if normed[L]:
                enc = norm_t(enc, fz.scale2[L][pos_r], fz.centered, None)
            bias = v.b_enc[feat_r] - (v.b_in @ v.W_enc[:, feat_r])
            bias = bias + (enc * fz.attn_const[L][pos_r]).sum(-1)  # layer L's attention writes resid_mid[L]
            g = fz.attn_t_one(L, enc, pos_r, q)
            g[pos_r, torch.arange(B)] += enc
            top = L - 1
        else:
            q = P
            g = torch.zeros(q, B, d, device=device)
            g[-1] = norm_t(logit_dirs.T[:, idx].T, fz.scale_f[-1], fz.centered, fz.lnf_w)
            bias = logit_const[idx]
            top = n - 1
        at_post = {}  # t -> the gradient at resid_post[t]
        for t in range(top, -1, -1):
            at_post[t] = g
            rows[:, err0 + t * P : err0 + t * P + q] = torch.einsum("qbd,qd->bq", g, errors[t, :q])
            bias = bias + torch.einsum("qbd,qd->b", g, const_post[t, :q])
            if W_skip_T[t] is not None:  # the skip path: resid_mid[t] -> (ln2) -> W_skip -> mlp_out[t]
                u = g @ W_skip_T[t]
                g = g + (norm_t(u, fz.scale2[t][:q, :, None], fz.centered, None) if normed[t] else u)
            bias = bias + torch.einsum("qbd,qd->b", g, fz.attn_const[t][:q].expand(q, d))
            count = int(upto[t][q - 1])
            if count:  # layer t's features: their writes into layers t .. top
                rows[:, first[t] : first[t] + count] = sources[t].edges(at_post, t, top, q, count)
            if t > 0:
                g = g + fz.attn_t(t, g)
        return bias + embedding_rows(fz, g, rows, emb0, q, top)

    return finish_walk(tokens, (f_layer, f_pos_all, f_idx_all, f_act_all), logit_tokens, probs[ids], node_input, n, minus,
                       first, rows_of, device, cache)
