"""The frozen model of one prompt: one forward pass, and the transposed frozen attention, norms and embeddings.

Shared by the per-layer walk (``_replacement``) and the skip / cross-layer walk (``_clt_walk``): everything
that does not depend on the dictionary. Attention patterns and every norm's scale are the clean run's; what is
left is linear (``_replacement``'s module docstring).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch

from ._targets import select_logits


def norm_t(v: torch.Tensor, scale: torch.Tensor, centered: bool, w: Optional[torch.Tensor]) -> torch.Tensor:
    """Transpose of the frozen norm ``x -> centre(x) / scale * w`` applied to a gradient ``v [..., pos, d]``."""
    if w is not None:
        v = v * w
    if centered:
        v = v - v.mean(-1, keepdim=True)
    return v / scale


def forward(model, hook_ins: Sequence[str], tokens: torch.Tensor, targets, logit_mass: float, max_logits: int):
    """The clean run, caching what the frozen model needs: (cache, last logits (before any soft-cap), probs,
    logit_tokens)."""
    cfg = model.cfg
    names = ["hook_embed", "ln_final.hook_scale"]
    if cfg.positional_embedding_type == "standard":
        names.append("hook_pos_embed")
    soft_capped = cfg.output_logits_soft_cap > 0
    if soft_capped:
        names.append("unembed.hook_in")
    for l, hook_in in enumerate(hook_ins):
        names += [f"blocks.{l}.ln1.hook_scale", f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.ln2.hook_scale",
                  f"blocks.{l}.ln1_post.hook_scale", f"blocks.{l}.hook_mlp_out", hook_in]
    logits, cache = model.run_with_cache(tokens, names_filter=sorted(set(names) & set(model.hook_dict)))
    last = logits[0, -1].float()
    probs = last.softmax(-1)
    if soft_capped:  # the graph's logit nodes are the logits before the (nonlinear) cap
        last = cache["unembed.hook_in"][0, -1].float() @ model.W_U.float() + model.b_U.float()
    logit_tokens = select_logits(probs, targets, logit_mass, max_logits)
    return cache, last, probs, logit_tokens


@dataclasses.dataclass
class Frozen:
    """The frozen model's pieces (float32, on the model's device); ``attn_t``/``attn_t_one`` as in ``_replacement``."""

    centered: bool
    scale1: list  # [pos, 1] per layer (ones without the norm)
    scale2: list
    post1: list
    scale_f: torch.Tensor
    attn_const: list  # [pos, d_model] per layer: the frozen attention's constant output
    attn_t: Callable
    attn_t_one: Callable
    emb_src: torch.Tensor  # [pos, d_model, 2]: token and positional embeddings
    E_tok: torch.Tensor  # [key, query, d_model]
    E_pos: torch.Tensor  # [query, d_model]
    lnf_w: Optional[torch.Tensor]  # ln_final's weight (None when folded or absent)


def freeze(model, cache, P: int, device) -> Frozen:
    cfg = model.cfg
    n, d = cfg.n_layers, cfg.d_model
    centered = cfg.normalization_type in ("LN", "LNPre")
    embed = cache["hook_embed"][0].float()
    pos_embed = cache["hook_pos_embed"][0].float() if "hook_pos_embed" in cache else torch.zeros_like(embed)
    ones = torch.ones(P, 1, device=device)

    def cached(name: str) -> torch.Tensor:
        return cache[name][0].float() if name in cache else ones

    scale1 = [cached(f"blocks.{l}.ln1.hook_scale") for l in range(n)]  # [pos, 1]; ones without the norm
    scale2 = [cached(f"blocks.{l}.ln2.hook_scale") for l in range(n)]
    post1 = [1.0 / cached(f"blocks.{l}.ln1_post.hook_scale") for l in range(n)]  # [pos, 1]: ln1_post's frozen 1/scale
    patterns = [cache[f"blocks.{l}.attn.hook_pattern"][0].float() for l in range(n)]  # [head, q, k]
    scale_f = cache["ln_final.hook_scale"][0].float()

    # Frozen attention of layer l: out[q] = sum_h sum_k P[h,q,k] ln1(x[k]) W_V[h] W_O[h] + const_l, with
    # ln1(x) = centre(x) / s[k] * w. Its transpose folds the norm into the weights and the pattern:
    # W_V_t[h*e, d] = centre_d(w * W_V[h])^T and P_t[h, k, q] = P[h, q, k] / s[k].
    groups, h_e = cfg.n_kv_groups, cfg.n_heads * cfg.d_head
    W_O_t, W_V_t, P_t, attn_const = [], [], [], []
    for l, block in enumerate(model.blocks):
        W_V = block.attn.W_V.float().repeat_interleave(groups, 0)  # [head, d_model, d_head]
        b_V = block.attn.b_V.float().repeat_interleave(groups, 0)  # [head, d_head]
        W_O = block.attn.W_O.float()  # [head, d_head, d_model]
        post_w = getattr(block.ln1_post, "w", None) if block.ln1_post is not None else None
        if post_w is not None:
            W_O = W_O * post_w.float()  # ln1_post's weight; its frozen scale is post1, per query position
        ln_w, ln_b = getattr(block.ln1, "w", None), getattr(block.ln1, "b", None)
        W_eff = W_V * ln_w.float()[None, :, None] if ln_w is not None else W_V
        if centered:
            W_eff = W_eff - W_eff.mean(1, keepdim=True)
        W_V_t.append(W_eff.permute(0, 2, 1).reshape(h_e, d))
        W_O_t.append(W_O.reshape(h_e, d).T.contiguous())  # [d_model, head*d_head]
        P_t.append((patterns[l] / scale1[l][None, None, :, 0]).transpose(1, 2).contiguous())  # [head, k, q]
        value_bias = b_V + torch.einsum("d,hde->he", ln_b.float(), W_V) if ln_b is not None else b_V
        b_O = block.attn.b_O.float() * (post_w.float() if post_w is not None else 1.0)
        attn_const.append((b_O + torch.einsum("he,hed->d", value_bias, W_O))[None, :] * post1[l])  # [pos, d_model]

    h, e = cfg.n_heads, cfg.d_head

    def attn_t(l: int, g: torch.Tensor) -> torch.Tensor:
        """g [q, B, d] at layer l's attention output -> its part at layer l's input (positions < q)."""
        q, B = g.shape[:2]
        u = ((g * post1[l][:q, :, None]) @ W_O_t[l]).view(q, B, h, e).permute(2, 0, 1, 3).reshape(h, q, B * e)
        u = torch.bmm(P_t[l][:, :q, :q], u)  # [head, k, B * d_head]
        u = u.view(h, q, B, e).permute(1, 2, 0, 3).reshape(q, B, h_e)
        return u @ W_V_t[l]

    def attn_t_one(l: int, seed: torch.Tensor, pos: torch.Tensor, q: int) -> torch.Tensor:
        """attn_t of a gradient that is ``seed [B, d]`` at one position per row: no zero rows multiplied."""
        y = torch.bmm(((seed * post1[l][pos]) @ W_O_t[l]).view(-1, h, e).transpose(0, 1), W_V_t[l].view(h, e, d))  # [head, B, d]
        coef = P_t[l][:, :q, :][:, :, pos]  # [head, k, B]: attention of each row's query to each key
        return torch.bmm(coef.permute(2, 1, 0), y.transpose(0, 1)).transpose(0, 1).contiguous()  # [B,k,h] @ [B,h,d]

    emb_src = torch.stack([embed, pos_embed], -1)  # [pos, d_model, 2]
    # The embeddings pushed forward through layer 0's frozen attention (plus the residual path), so the walk
    # stops at resid_mid[0] instead of transposing that attention for every row: E_tok[k, q] is what the
    # token embedding at k adds to resid_mid[0] at q; E_pos the same for all positional embeddings summed.
    def through_attn0(x: torch.Tensor) -> torch.Tensor:
        vals = (x @ W_V_t[0].T / scale1[0]).view(P, h, e)  # [key, head, d_head]
        z = torch.einsum("khe,hed->hkd", vals, W_O_t[0].T.reshape(h, e, d))  # [head, key, d_model]
        return torch.einsum("hqk,hkd->kqd", patterns[0], z) * post1[0][None] + torch.diag_embed(x.T).permute(1, 2, 0)
    E_tok = through_attn0(embed)  # [key, query, d_model]
    E_pos = through_attn0(pos_embed).sum(0)  # [query, d_model]

    lnf_w = getattr(model.ln_final, "w", None)
    return Frozen(centered, scale1, scale2, post1, scale_f, attn_const, attn_t, attn_t_one, emb_src, E_tok, E_pos,
                  lnf_w.float() if lnf_w is not None else None)


def logit_seeds(model, logit_tokens: torch.Tensor, minus: Optional[int], last: torch.Tensor):
    """(logit_dirs [n_logits, d_model], logit_const [n_logits], demeaned last logits, ids on the model's device)."""
    W_U, b_U = model.W_U.float(), model.b_U.float()
    ids = logit_tokens.to(W_U.device)
    if minus is None:
        logit_dirs = (W_U[:, ids] - W_U.mean(1, keepdim=True)).T  # [n_logits, d_model], demeaned
        logit_const = b_U[ids] - b_U.mean()
    else:  # a direction: the reference is logit(minus) instead of the mean logit
        if ids.numel() != 1 or int(ids[0]) == int(minus):
            raise ValueError("a direction target needs one token x and another token y (logit(x) - logit(y))")
        logit_dirs = (W_U[:, ids] - W_U[:, int(minus)][:, None]).T
        logit_const = b_U[ids] - b_U[int(minus)]
    lnf_w, lnf_b = getattr(model.ln_final, "w", None), getattr(model.ln_final, "b", None)
    if lnf_b is not None:
        logit_const = logit_const + logit_dirs @ lnf_b.float()
    demeaned = last - (last.mean() if minus is None else last[int(minus)])
    return logit_dirs, logit_const, demeaned, ids


def embedding_rows(fz: Frozen, g: torch.Tensor, rows: torch.Tensor, emb0: int, q: int, top: int) -> torch.Tensor:
    """A walk's last step: with ``g [q, B, d]`` the rows' gradient at ``resid_mid[0]`` (``top >= 0``; at
    ``resid_pre[0]`` for layer-0 targets, ``top < 0``), write the token embeddings' edges into ``rows[:, emb0:]``
    and return what the positional embeddings add to each row's bias ``[B]``."""
    if top >= 0:
        rows[:, emb0 : emb0 + q] = torch.einsum("qbd,kqd->bk", g, fz.E_tok[:q, :q])
        return torch.einsum("qbd,qd->b", g, fz.E_pos[:q])
    out = torch.bmm(g, fz.emb_src[:q])  # [q, B, 2]
    rows[:, emb0 : emb0 + q] = out[:, :, 0].T
    return out[:, :, 1].sum(0)
