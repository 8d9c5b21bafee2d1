"""The fast engine behind activation patching: recompute only what a patch can change.

A patch at layer ``l`` whose first changed position is ``s`` leaves every layer
before ``l`` and every position before ``s`` exactly as in the base run (causal
attention). So a patched run starts at block ``l`` with the base residual of
positions ``s..`` only, and each block's attention reads the base run's cached
keys and values for positions ``< s``. In the last block only the last
position's query, MLP and residual are computed (the metric reads nothing else).

Rows (one per cell) are batched two ways:
- by suffix start: cells with close ``s`` share a chunk computing positions
  ``s_min..`` (a row whose own ``s`` is later recomputes a few unchanged positions);
- staggered by layer: a chunk walks the blocks once, and the rows of cells at
  layer ``j`` join the batch when block ``j`` is reached (they enter with the base
  residual), so late-layer cells ride along in the same matrix products.
A cell whose patch changes nothing (source equals base) is not run: its value is
the base run's.

The block here is the same computation as ``lens_core.components``'s (fused QKV
projection, rotary, grouped-query attention, parallel or sequential MLP) written
for a position suffix; the tests compare every sweep with plain hooked runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from lens_core.components import apply_rotary, rotary_cos_sin

# activation -> axis of the query/sequence position in the activation (no batch dim)
POSITION_AXIS = {"resid_pre": 0, "resid_mid": 0, "resid_post": 0, "attn_out": 0, "mlp_out": 0,
                 "q": 0, "k": 0, "v": 0, "z": 0, "pattern": 1}


@dataclasses.dataclass
class SuffixCell:
    layer: int
    activation: str  # a POSITION_AXIS key
    index: tuple  # where the source is copied in: an index into the activation (no batch dim)
    source: torch.Tensor  # the activation to copy in
    start: Optional[int] = None  # first position the patch changes (None: it changes nothing)


def supported(model) -> bool:
    return all(hasattr(model.blocks[0].attn, name) for name in ("W_QKV", "b_QKV", "W_O", "b_O"))


class SuffixRunner:
    """Caches what the base run provides (residuals, keys, values) and runs patched suffixes."""

    def __init__(self, model, base_tokens: torch.Tensor, extra_names: Sequence[str] = ()) -> None:
        self.model = model
        cfg = self.cfg = model.cfg
        n = cfg.n_layers
        self.rotary = cfg.positional_embedding_type == "rotary"
        k_name = "rot_k" if self.rotary else "k"
        names = [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
        if not cfg.parallel_attn_mlp:
            names += [f"blocks.{l}.hook_resid_mid" for l in range(n)]
        names += [f"blocks.{l}.attn.hook_{k_name}" for l in range(n)] + [f"blocks.{l}.attn.hook_v" for l in range(n)]
        self.base_logits, cache = model.run_with_cache(base_tokens, names_filter=sorted(set(names) | set(extra_names)))
        self.cache = cache
        self.resid_pre = [cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(n)]  # [pos, d_model]
        self.final_last = cache[f"blocks.{n - 1}.hook_resid_post"][0, -1]  # [d_model]
        self.resid_mid = None if cfg.parallel_attn_mlp else [cache[f"blocks.{l}.hook_resid_mid"][0] for l in range(n)]
        self.keys = [cache[f"blocks.{l}.attn.hook_{k_name}"][0] for l in range(n)]  # [pos, kv_head, d_head]
        self.values = [cache[f"blocks.{l}.attn.hook_v"][0] for l in range(n)]
        self.n_pos = base_tokens.shape[1]
        if self.rotary:
            self.cos, self.sin = rotary_cos_sin(cfg, self.n_pos, base_tokens.device)
        # The model's own fused [d_model, (h + 2 kv) * d_head] projections (views, no copies).
        self.qkv = [(b.attn.W_QKV, b.attn.b_QKV, b.attn.W_O.flatten(0, 1), b.attn.b_O) for b in model.blocks]

    # ---- one block on a position suffix ------------------------------------------------
    def _block(self, layer: int, x: Optional[torch.Tensor], start: int, patch: Callable,
               mid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [rows, pos - start, d_model]`` -> the block's output for the same positions
        (only the last position in the last block). ``mid``: more rows that join after the
        attention, as their ``resid_mid`` (appended after ``x``'s rows; sequential blocks only)."""
        cfg = self.cfg
        last_block = layer == cfg.n_layers - 1
        q_start = self.n_pos - 1 if last_block else start
        if mid is not None:
            if last_block:
                mid = mid[:, -1:]
            resid_mid = mid if x is None else torch.cat([self._attention(layer, x, start, patch), mid])
            return self._mlp(layer, resid_mid, q_start, patch)
        if cfg.parallel_attn_mlp:
            return self._attention(layer, x, start, patch)
        return self._mlp(layer, self._attention(layer, x, start, patch), q_start, patch)

    def _mlp(self, layer: int, resid_mid: torch.Tensor, q_start: int, patch: Callable) -> torch.Tensor:
        block = self.model.blocks[layer]
        mlp_out = patch("mlp_out", block.mlp(block.ln2(resid_mid)), q_start)
        return patch("resid_post", resid_mid + mlp_out, q_start)

    def _attention(self, layer: int, x: torch.Tensor, start: int, patch: Callable) -> torch.Tensor:
        """The attention half of a block: ``resid_mid`` (sequential), or the whole block's
        output when attention and MLP run in parallel."""
        cfg, block = self.cfg, self.model.blocks[layer]
        rows, n_new, _ = x.shape
        h, kv, e = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head
        last_block = layer == cfg.n_layers - 1
        q_start = self.n_pos - 1 if last_block else start

        x = patch("resid_pre", x, start)
        W, b, W_O, b_O = self.qkv[layer]
        qkv = torch.addmm(b, block.ln1(x).reshape(-1, cfg.d_model), W).view(rows, n_new, -1)
        q, k, v = qkv.split((h * e, kv * e, kv * e), dim=-1)
        q = patch("q", q.unflatten(-1, (h, e)), start)  # [rows, new, head, d_head]
        k = patch("k", k.unflatten(-1, (kv, e)), start)
        v = patch("v", v.unflatten(-1, (kv, e)), start)
        if last_block:
            q = q[:, -1:]
        if self.rotary:
            q = apply_rotary(q, self.cos[q_start:], self.sin[q_start:])
            k = apply_rotary(k, self.cos[start:], self.sin[start:])
        keys = torch.cat([self.keys[layer][:start].expand(rows, -1, -1, -1), k], dim=1)  # [rows, pos, kv, d_head]
        values = torch.cat([self.values[layer][:start].expand(rows, -1, -1, -1), v], dim=1)
        if cfg.n_kv_groups > 1:
            keys = keys.repeat_interleave(cfg.n_kv_groups, dim=2)
            values = values.repeat_interleave(cfg.n_kv_groups, dim=2)
        q, keys, values = q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)  # [rows, head, pos, d_head]
        query_pos = torch.arange(q_start, self.n_pos, device=x.device)[:, None]
        allowed = torch.arange(self.n_pos, device=x.device)[None, :] <= query_pos  # [query, key]
        if getattr(patch, "activation", None) == "pattern":
            scores = torch.matmul(q, keys.transpose(-1, -2)) / cfg.attn_scale
            pattern = scores.masked_fill(~allowed, float("-inf")).float().softmax(dim=-1).to(x.dtype)
            pattern = patch("pattern", pattern, q_start)  # [rows, head, query, key]
            z = torch.matmul(pattern, values)
        else:
            z = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=1.0 / cfg.attn_scale)
        z = patch("z", z.transpose(1, 2), q_start)  # [rows, query, head, d_head]
        attn_out = torch.addmm(b_O, z.reshape(-1, h * e), W_O).view(rows, -1, cfg.d_model)
        attn_out = patch("attn_out", attn_out, q_start)
        if last_block:
            x = x[:, -1:]
        if cfg.parallel_attn_mlp:
            mlp_out = patch("mlp_out", block.mlp(block.ln2(x)), q_start)
            return patch("resid_post", x + attn_out + mlp_out, q_start)
        return patch("resid_mid", x + attn_out, q_start)

    def _joins_after_attention(self, cells: list) -> bool:
        """Head-output cells change nothing before their head's output: their rows can skip
        the attention of their own layer (its q, k, v and pattern equal the base run's)."""
        return self.resid_mid is not None and all(c.activation == "z" for c in cells) and \
            f"blocks.{cells[0].layer}.attn.hook_z" in self.cache

    def _resid_mid_rows(self, cells: list, start: int) -> torch.Tensor:
        """``resid_mid`` of head-output cells: the base run's, plus each patched head's change
        of output through W_O ([rows, pos - start, d_model])."""
        layer = cells[0].layer
        base = self.cache[f"blocks.{layer}.attn.hook_z"][0][start:]  # [pos, head, d_head]
        source = cells[0].source[start:]
        mask = torch.zeros((len(cells), *cells[0].source.shape), dtype=torch.bool, device=base.device)
        for row, cell in enumerate(cells):
            mask[(row, *cell.index)] = True
        delta = torch.where(mask[:, start:], source.to(base.dtype), base) - base  # [rows, pos, head, d_head]
        W_O = self.qkv[layer][2]  # [head * d_head, d_model]
        return self.resid_mid[layer][start:] + (delta.flatten(2) @ W_O)

    # ---- many cells ----------------------------------------------------------------------
    def run(
        self,
        cells: Sequence[SuffixCell],
        readout: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
        max_rows: int,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> tuple[torch.Tensor, ...]:
        """``readout(final residual at the last position [rows, d_model])`` for every cell, in order."""
        total = len(cells)
        baseline = readout(self.final_last[None])
        out = [b.repeat(total) for b in baseline]
        todo = sorted((i for i, c in enumerate(cells) if c.start is not None), key=lambda i: (cells[i].start, cells[i].layer))
        done = total - len(todo)
        for chunk in _chunks(todo, cells, self.n_pos, max_rows):
            chunk.sort(key=lambda i: cells[i].layer)
            start = min(cells[i].start for i in chunk)
            layers = [cells[i].layer for i in chunk]
            x = None
            for layer in range(layers[0], self.cfg.n_layers):
                joining = [cells[i] for i in chunk if cells[i].layer == layer]
                if joining and self._joins_after_attention(joining):
                    x = self._block(layer, x, start, _patcher([], slice(0)), mid=self._resid_mid_rows(joining, start))
                    continue
                if joining:
                    fresh = self.resid_pre[layer][start:].expand(len(joining), -1, -1)
                    x = fresh.clone() if x is None else torch.cat([x, fresh])
                rows = slice(x.shape[0] - len(joining), x.shape[0])
                x = self._block(layer, x, start, _patcher(joining, rows))
            values = readout(x[:, -1])
            index = torch.tensor(chunk, device=out[0].device)
            for target, value in zip(out, values):
                target[index] = value.to(target.dtype)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        if progress is not None and not todo:
            progress(total, total)
        return tuple(out)


def _chunks(todo: list[int], cells: Sequence[SuffixCell], n_pos: int, max_rows: int) -> list[list[int]]:
    """Consecutive (by suffix start) cells grouped while the extra positions stay small."""
    chunks: list[list[int]] = []
    for i in todo:
        s = cells[i].start
        if chunks:
            current = chunks[-1]
            s_min = cells[current[0]].start
            if len(current) < max_rows and (s - s_min) * 4 <= n_pos - s_min:
                current.append(i)
                continue
        chunks.append([i])
    return chunks


def _patcher(cells: list[SuffixCell], rows: slice) -> Callable:
    """A ``patch(activation, tensor, start)`` writing each joining cell's source into its row."""
    if not cells:
        return lambda activation, tensor, start: tensor
    activation = cells[0].activation
    axis = POSITION_AXIS[activation]
    source = cells[0].source
    mask = torch.zeros((len(cells), *source.shape), dtype=torch.bool, device=source.device)  # [joining, *shape]
    for row, cell in enumerate(cells):
        mask[(row, *cell.index)] = True

    def patch(name: str, tensor: torch.Tensor, start: int) -> torch.Tensor:
        if name != activation:
            return tensor
        index = (slice(None),) * (axis + 1) + (slice(start, start + tensor.shape[axis + 1]),)
        src = source[index[1:]]
        tensor[rows] = torch.where(mask[index], src.to(tensor.dtype), tensor[rows])
        return tensor

    patch.activation = activation
    return patch


def first_change(index: tuple, changed: torch.Tensor, axis: int) -> Optional[int]:
    """The first position at which copying the source in at ``index`` changes the base activation.

    ``changed``: ``source != base`` over the whole activation; ``axis``: its position axis.
    """
    sub = changed[index]
    if not bool(sub.any()):
        return None
    position = index[axis] if axis < len(index) else slice(None)
    if isinstance(position, int):
        return position
    sub_axis = axis - sum(isinstance(i, int) for i in index[:axis])  # integer indices drop their dims
    dims = [d for d in range(sub.dim()) if d != sub_axis]
    per_pos = sub.any(dim=dims) if dims else sub
    return int(per_pos.nonzero()[0, 0]) + (position.start or 0)
