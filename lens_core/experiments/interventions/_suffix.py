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

Each step is the model's own block (``model.blocks[l](x, past_kv=..., last_query_only=...)``)
with the patch as a hook on the layer's hook point; the tests compare every sweep
with plain one-run-per-cell hooked runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch

from lens_core.components import TransformerBlock
from lens_core.utils import get_act_name

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
    """Blocks that resume from cached keys and values (lens_core's own)."""
    return isinstance(model.blocks[0], TransformerBlock)


class SuffixRunner:
    """Caches what the base run provides (residuals, keys, values) and runs patched suffixes."""

    def __init__(self, model, base_tokens: torch.Tensor, extra_names: Sequence[str] = ()) -> None:
        self.model = model
        cfg = self.cfg = model.cfg
        n = cfg.n_layers
        k_name = "rot_k" if cfg.positional_embedding_type == "rotary" else "k"  # keys as attention reads them
        names = [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
        names += [f"blocks.{l}.attn.hook_{k_name}" for l in range(n)] + [f"blocks.{l}.attn.hook_v" for l in range(n)]
        self.base_logits, cache = model.run_with_cache(base_tokens, names_filter=sorted(set(names) | set(extra_names)))
        self.cache = cache
        self.resid_pre = [cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(n)]  # [pos, d_model]
        self.final_last = cache[f"blocks.{n - 1}.hook_resid_post"][0, -1]  # [d_model]
        self.keys = [cache[f"blocks.{l}.attn.hook_{k_name}"][0] for l in range(n)]  # [pos, kv_head, d_head]
        self.values = [cache[f"blocks.{l}.attn.hook_v"][0] for l in range(n)]
        self.n_pos = base_tokens.shape[1]

    # ---- one block on a position suffix ------------------------------------------------
    def _block(self, layer: int, x: torch.Tensor, start: int, joining: list, rows: slice) -> torch.Tensor:
        """``x [rows, pos - start, d_model]`` -> the block's output for the same positions (only
        the last position in the last block), the ``joining`` cells' patch written into ``rows``."""
        last_block = layer == self.cfg.n_layers - 1
        hooks = []
        if joining:
            activation = joining[0].activation
            # Query-side activations of the last block hold its last position only.
            offset = start if activation in ("resid_pre", "q", "k", "v") or not last_block else self.n_pos - 1
            patch = _patcher(joining, rows, offset)
            hooks.append((get_act_name(activation, layer), lambda tensor, hook: patch(tensor)))
        past_kv = (self.keys[layer][:start], self.values[layer][:start])
        with self.model.hooks(fwd_hooks=hooks):
            return self.model.blocks[layer](x, past_kv=past_kv, last_query_only=last_block)

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
                if joining:
                    fresh = self.resid_pre[layer][start:].expand(len(joining), -1, -1)
                    x = fresh.clone() if x is None else torch.cat([x, fresh])
                rows = slice(x.shape[0] - len(joining), x.shape[0])
                x = self._block(layer, x, start, joining, rows)
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


def _patcher(cells: list[SuffixCell], rows: slice, offset: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Write each cell's source into its row of an activation whose position axis starts at ``offset``."""
    axis = POSITION_AXIS[cells[0].activation]
    source = cells[0].source
    mask = torch.zeros((len(cells), *source.shape), dtype=torch.bool, device=source.device)  # [joining, *shape]
    for row, cell in enumerate(cells):
        mask[(row, *cell.index)] = True

    def patch(tensor: torch.Tensor) -> torch.Tensor:
        index = (slice(None),) * (axis + 1) + (slice(offset, offset + tensor.shape[axis + 1]),)
        tensor[rows] = torch.where(mask[index], source[index[1:]].to(tensor.dtype), tensor[rows])
        return tensor

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
