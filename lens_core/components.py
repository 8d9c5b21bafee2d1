"""The parts of a transformer, each with its hook points.

Axis names used throughout (and in shape comments):
    batch, pos (query position), key_pos, head, kv_head, d_model, d_head,
    d_mlp, d_vocab.

Weights are stored in the layout the forward pass multiplies with (q, k and v
fused into one matrix), and exposed under TransformerLens's names and shapes
as views (``W_Q``: [head, d_model, d_head]). Hooked and unhooked runs take the
same arithmetic path except where noted: with no hook on ``hook_attn_scores``
or ``hook_pattern``, attention uses PyTorch's fused kernel; with no hook on a
norm's ``hook_scale``/``hook_normalized``, the fused norm kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import HookedTransformerConfig
from .hooks import HookPoint
from .padding import position_ids
from .rotary import apply_rotary, rotary_cos_sin  # noqa: F401  (re-exported: they lived here)
from .shortformer import pos_for as shortformer_pos_for, qkv_with_positions


def _param(*shape: int) -> nn.Parameter:
    # Loading overwrites every weight, so skip random initialisation.
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class Embed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig) -> None:
        super().__init__()
        self.W_E = _param(cfg.d_vocab, cfg.d_model)
        self.scale = cfg.embed_scale  # Gemma: sqrt(d_model), applied in the weights' dtype as Hugging Face does

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = F.embedding(tokens, self.W_E)  # [batch, pos, d_model]
        return out if self.scale == 1.0 else out * torch.tensor(self.scale, dtype=out.dtype)


class PosEmbed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig) -> None:
        super().__init__()
        self.W_pos = _param(cfg.n_ctx, cfg.d_model)

    def forward(self, batch: int, n_pos: int, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attention_mask is None:
            return self.W_pos[:n_pos].unsqueeze(0).expand(batch, n_pos, -1)  # [batch, pos, d_model]
        # Padded batch: positions count real tokens only; padding gets no positional embedding (as in TransformerLens).
        pos_embed = self.W_pos[position_ids(attention_mask)]
        return pos_embed.masked_fill(~attention_mask.bool()[..., None], 0.0)


class Unembed(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig) -> None:
        super().__init__()
        self.weight = _param(cfg.d_vocab_out, cfg.d_model)  # stored like the embedding: [d_vocab, d_model]
        self.b_U = _param(cfg.d_vocab_out)
        self.soft_cap = cfg.output_logits_soft_cap

    @property
    def W_U(self) -> torch.Tensor:
        return self.weight.T  # [d_model, d_vocab]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_cap(F.linear(x, self.weight, self.b_U), self.soft_cap)  # [batch, pos, d_vocab]


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap * tanh(x / cap)`` when ``cap > 0`` (Gemma 2's logit soft-capping), else ``x``."""
    return x if cap is None or cap <= 0 else torch.tanh(x / cap) * cap


class Norm(nn.Module):
    """LayerNorm or RMSNorm; the ``Pre`` kinds have had their weights folded into the next layer.

    ``kind``/``d``: for the norms that are never folded (post-sublayer norms, q/k norms over ``d``
    features). Gemma's ``(1 + weight)`` is converted at load time, so ``w`` is the whole factor."""

    def __init__(self, cfg: HookedTransformerConfig, name: str, kind: Optional[str] = None, d: Optional[int] = None) -> None:
        super().__init__()
        self.kind = kind or cfg.normalization_type
        self.eps = cfg.eps
        self.centered = self.kind in ("LN", "LNPre")
        d = d or cfg.d_model
        if self.kind in ("LN", "RMS"):
            self.w = _param(d)
        if self.kind == "LN":
            self.b = _param(d)
        if self.kind is None:  # normalization_type=None: the identity, with no hook points (TransformerLens's nn.Identity)
            return
        self.hook_scale = HookPoint(f"{name}.hook_scale")  # [batch, pos, 1]
        self.hook_normalized = HookPoint(f"{name}.hook_normalized")  # [batch, pos, d_model]

    @property
    def has_weights(self) -> bool:
        return self.kind in ("LN", "RMS")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind is None:
            return x
        hooked = self.hook_scale.is_active() or self.hook_normalized.is_active()
        if self.centered and not hooked:
            return F.layer_norm(x, (x.shape[-1],), getattr(self, "w", None), getattr(self, "b", None), self.eps)
        dtype = x.dtype
        x = x.float()  # norms in float32, as Hugging Face does for half precision
        if self.centered:
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized((x / scale).to(dtype))
        if self.kind in ("LN", "RMS"):
            x = x * self.w
        if self.kind == "LN":
            x = x + self.b
        return x


class Attention(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        h, kv, e, d = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model
        self.split = (h * e, kv * e, kv * e)
        self.W_QKV = _param(d, sum(self.split))  # columns: q heads, then k heads, then v heads
        self.b_QKV = _param(sum(self.split))
        self.W_O = _param(h, e, d)
        self.b_O = _param(d)
        name = f"blocks.{layer}.attn"
        for point in ("q", "k", "v", "rot_q", "rot_k", "attn_scores", "pattern", "z", "result"):
            setattr(self, f"hook_{point}", HookPoint(f"{name}.hook_{point}"))
        if cfg.positional_embedding_type != "rotary":
            del self.hook_rot_q, self.hook_rot_k
        self.local = cfg.is_local(layer)
        self.shortformer_pos = None  # set (not registered: the model owns it) for shortformer models
        if cfg.qk_norm is not None:  # RMSNorm of each head's query/key (or of all heads at once), before rotary
            kind, per_head = cfg.unfolded_norm_type, cfg.qk_norm == "head"
            self.q_norm = Norm(cfg, f"{name}.q_norm", kind, e if per_head else h * e)
            self.k_norm = Norm(cfg, f"{name}.k_norm", kind, e if per_head else kv * e)

    # TransformerLens-shaped views of the fused weights.
    def _heads(self, index: int, n: int, flat: torch.Tensor) -> torch.Tensor:
        start = sum(self.split[:index])
        return flat[..., start : start + self.split[index]].unflatten(-1, (n, self.cfg.d_head))

    @property
    def W_Q(self) -> torch.Tensor:
        return self._heads(0, self.cfg.n_heads, self.W_QKV).permute(1, 0, 2)

    @property
    def W_K(self) -> torch.Tensor:
        return self._heads(1, self.cfg.n_key_value_heads, self.W_QKV).permute(1, 0, 2)

    @property
    def W_V(self) -> torch.Tensor:
        return self._heads(2, self.cfg.n_key_value_heads, self.W_QKV).permute(1, 0, 2)

    @property
    def b_Q(self) -> torch.Tensor:
        return self._heads(0, self.cfg.n_heads, self.b_QKV)

    @property
    def b_K(self) -> torch.Tensor:
        return self._heads(1, self.cfg.n_key_value_heads, self.b_QKV)

    @property
    def b_V(self) -> torch.Tensor:
        return self._heads(2, self.cfg.n_key_value_heads, self.b_QKV)

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None, last_query_only: bool = False,
                split_inputs: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """x: [batch, pos, d_model] -> attention output [batch, query, d_model].

        ``split_inputs``: normalized inputs one per head, (query [batch, pos, head, d_model],
        key and value [batch, pos, kv_head, d_model]), used instead of ``x`` (the block's
        ``hook_q_input``/``hook_k_input``/``hook_v_input`` path, for edge-level patching).

        ``past_kv``: keys (after rotary) and values of the positions before ``x``
        ([prefix, kv_head, d_head], or with a batch axis first), so ``x`` holds positions
        ``prefix..`` of a longer sequence: hooks then see only ``x``'s positions (and
        patterns all keys). ``last_query_only``: only the last position asks (its output
        alone is returned), for runs that read nothing else.
        """
        cfg = self.cfg
        if split_inputs is not None:
            x = split_inputs[0]
        batch, n_new = x.shape[:2]
        offset = 0 if past_kv is None else past_kv[0].shape[-3]
        n_keys = offset + n_new
        shortformer = self.shortformer_pos  # the model's PosEmbed for shortformer models (lens_core.shortformer)
        if shortformer is not None:
            pos = shortformer_pos_for(shortformer, batch, n_new, offset, attention_mask)
            if split_inputs is not None:
                split_inputs = (split_inputs[0] + pos[:, :, None], split_inputs[1] + pos[:, :, None], split_inputs[2])
        if split_inputs is None:
            if shortformer is not None:
                qkv = qkv_with_positions(self, x, pos)
            else:
                qkv = torch.addmm(self.b_QKV, x.reshape(-1, cfg.d_model), self.W_QKV).view(batch, n_new, -1)
            q, k, v = qkv.split(self.split, dim=-1)
            q, k, v = (t.unflatten(-1, (n, cfg.d_head)) for t, n in zip((q, k, v), (cfg.n_heads, cfg.n_key_value_heads, cfg.n_key_value_heads)))
        else:
            q, k, v = (torch.einsum("bphd,hde->bphe", inp, w) + b for inp, w, b in
                       zip(split_inputs, (self.W_Q, self.W_K, self.W_V), (self.b_Q, self.b_K, self.b_V)))
        q = self.hook_q(q)  # [batch, pos, head, d_head]
        k = self.hook_k(k)  # [batch, pos, kv_head, d_head]
        v = self.hook_v(v)
        if cfg.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        elif cfg.qk_norm == "all":
            q, k = self.q_norm(q.flatten(-2)).view(q.shape), self.k_norm(k.flatten(-2)).view(k.shape)
        if cfg.positional_embedding_type == "rotary":
            cos, sin = rotary_cos_sin(cfg, n_keys, x.device, local=self.local)
            if attention_mask is None:
                cos, sin = cos[offset:], sin[offset:]
            else:  # a padded batch: each row's positions skip its padding
                ids = position_ids(attention_mask.to(x.device), offset)
                cos, sin = cos[ids], sin[ids]
            q = self.hook_rot_q(apply_rotary(q, cos, sin))
            k = self.hook_rot_k(apply_rotary(k, cos, sin))
        if last_query_only:
            q = q[:, -1:]
        if past_kv is not None:
            k = torch.cat([past_kv[0].expand(batch, *past_kv[0].shape[-3:]), k], dim=1)
            v = torch.cat([past_kv[1].expand(batch, *past_kv[1].shape[-3:]), v], dim=1)
        if cfg.n_kv_groups > 1:
            k = k.repeat_interleave(cfg.n_kv_groups, dim=2)
            v = v.repeat_interleave(cfg.n_kv_groups, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, head, pos, d_head]

        query_pos = torch.arange(n_keys - q.shape[2], n_keys, device=x.device)
        allowed = torch.arange(n_keys, device=x.device)[None, :] <= query_pos[:, None]  # [query, key_pos]
        if attention_mask is not None:
            # Padding keys are hidden; a position always sees itself, so no row is empty.
            allowed = allowed & (attention_mask[:, None, None, :].bool() | (query_pos[:, None] == torch.arange(n_keys, device=x.device)))
        if self.local:  # sliding window: the last window_size keys, the query's own included
            allowed = allowed & (torch.arange(n_keys, device=x.device)[None, :] > query_pos[:, None] - cfg.window_size)
        if self.hook_attn_scores.is_active() or self.hook_pattern.is_active() or cfg.attn_scores_soft_cap > 0:
            scores = torch.matmul(q, k.transpose(-1, -2)) / cfg.attn_scale  # [batch, head, query, key_pos]
            scores = soft_cap(scores, cfg.attn_scores_soft_cap)
            scores = self.hook_attn_scores(scores.masked_fill(~allowed, float("-inf")))
            pattern = self.hook_pattern(scores.float().softmax(dim=-1).to(x.dtype))
            z = torch.matmul(pattern, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0 / cfg.attn_scale)
        z = self.hook_z(z.transpose(1, 2))  # [batch, query, head, d_head]
        n_query = z.shape[1]
        if self.hook_result.is_active():
            result = self.hook_result(torch.einsum("bphe,hed->bphd", z, self.W_O))  # [batch, query, head, d_model]
            return result.sum(dim=2) + self.b_O
        flat_z = z.reshape(batch * n_query, cfg.n_heads * cfg.d_head)
        return torch.addmm(self.b_O, flat_z, self.W_O.view(-1, cfg.d_model)).view(batch, n_query, cfg.d_model)


class MLP(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = _param(cfg.d_model, cfg.d_mlp)
        self.b_in = _param(cfg.d_mlp)
        if cfg.gated_mlp:
            self.W_gate = _param(cfg.d_model, cfg.d_mlp)
            self.hook_pre_linear = HookPoint(f"blocks.{layer}.mlp.hook_pre_linear")
        self.W_out = _param(cfg.d_mlp, cfg.d_model)
        self.b_out = _param(cfg.d_model)
        self.hook_pre = HookPoint(f"blocks.{layer}.mlp.hook_pre")  # [batch, pos, d_mlp]
        self.hook_post = HookPoint(f"blocks.{layer}.mlp.hook_post")  # [batch, pos, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.cfg.d_model)
        shape = (*x.shape[:-1], self.cfg.d_mlp)
        if self.cfg.gated_mlp:
            # TransformerLens's convention: hook_pre is the gate, hook_pre_linear the linear branch.
            pre = self.hook_pre(torch.matmul(flat, self.W_gate).view(shape))
            linear = self.hook_pre_linear(torch.addmm(self.b_in, flat, self.W_in).view(shape))
            post = self.hook_post(self.act(pre) * linear)
        else:
            pre = self.hook_pre(torch.addmm(self.b_in, flat, self.W_in).view(shape))
            post = self.hook_post(self.act(pre))
        out = torch.addmm(self.b_out, post.reshape(-1, self.cfg.d_mlp), self.W_out)
        return out.view(*x.shape[:-1], self.cfg.d_model)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: HookedTransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        pre, post = cfg.sublayer_norms in ("pre", "pre_post"), cfg.sublayer_norms in ("pre_post", "post")
        # OLMo 2 has no pre-sublayer norms: ln1/ln2 are None and the sublayers read the residual itself.
        self.ln1 = Norm(cfg, f"blocks.{layer}.ln1") if pre else None
        self.attn = Attention(cfg, layer)
        # Attention-only models (TransformerLens's attn_only): no ln2, MLP or their hook points.
        self.ln2 = Norm(cfg, f"blocks.{layer}.ln2") if pre and not cfg.attn_only else None
        self.mlp = None if cfg.attn_only else MLP(cfg, layer)
        if post:  # norms of each sublayer's output before the residual add (never folded)
            self.ln1_post = Norm(cfg, f"blocks.{layer}.ln1_post", cfg.unfolded_norm_type)
            self.ln2_post = Norm(cfg, f"blocks.{layer}.ln2_post", cfg.unfolded_norm_type)
        else:
            self.ln1_post = self.ln2_post = None
        for point in ("resid_pre", "attn_out", "mlp_out", "resid_post"):
            setattr(self, f"hook_{point}", HookPoint(f"blocks.{layer}.hook_{point}"))
        # Receivers' inputs (edge-level patching): the residual before ln1, one copy per head
        # [batch, pos, head or kv_head, d_model], and before ln2 [batch, pos, d_model]. With no
        # hook on the per-head points the block takes its fused path, unchanged.
        for point in ("q_input", "k_input", "v_input", "mlp_in"):
            setattr(self, f"hook_{point}", HookPoint(f"blocks.{layer}.hook_{point}"))
        if not cfg.parallel_attn_mlp:
            self.hook_resid_mid = HookPoint(f"blocks.{layer}.hook_resid_mid")
        if cfg.attn_only:
            del self.hook_mlp_in, self.hook_mlp_out, self.hook_resid_mid

    def forward(
        self,
        resid: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        past_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        last_query_only: bool = False,
    ) -> torch.Tensor:
        """resid: [batch, pos, d_model]; ``past_kv`` and ``last_query_only`` as in :class:`Attention`
        (with ``last_query_only`` only the last position comes out)."""
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        if self.hook_q_input.is_active() or self.hook_k_input.is_active() or self.hook_v_input.is_active():
            per_head = (self.cfg.n_heads, self.cfg.n_key_value_heads, self.cfg.n_key_value_heads)
            inputs = [point(resid[:, :, None].expand(-1, -1, n, -1)) for point, n in
                      zip((self.hook_q_input, self.hook_k_input, self.hook_v_input), per_head)]
            # One ln1 call on [batch, pos, head + 2 kv_head, d_model], so its hooks still fire once.
            split = _apply(self.ln1, torch.cat(inputs, dim=2)).split(per_head, dim=2)
            attn_out = self.attn(None, attention_mask, past_kv, last_query_only, split_inputs=split)
        else:
            attn_out = self.attn(_apply(self.ln1, resid), attention_mask, past_kv, last_query_only)
        attn_out = self.hook_attn_out(_apply(self.ln1_post, attn_out))
        if last_query_only:
            resid = resid[:, -1:]
        if self.mlp is None:
            return self.hook_resid_post(resid + attn_out)
        if self.cfg.parallel_attn_mlp:
            mlp_out = self.hook_mlp_out(_apply(self.ln2_post, self.mlp(_apply(self.ln2, self._mlp_in(resid)))))
            return self.hook_resid_post(resid + attn_out + mlp_out)
        resid_mid = self.hook_resid_mid(resid + attn_out)
        mlp_out = self.hook_mlp_out(_apply(self.ln2_post, self.mlp(_apply(self.ln2, self._mlp_in(resid_mid)))))
        return self.hook_resid_post(resid_mid + mlp_out)

    def _mlp_in(self, resid: torch.Tensor) -> torch.Tensor:
        # A copy when hooked, so a hook's change (or a gradient taken there) is the MLP's input
        # alone, not the residual stream that also flows past the MLP.
        return self.hook_mlp_in(resid.clone()) if self.hook_mlp_in.is_active() else resid


def _apply(norm: Optional[Norm], x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)
