"""ActivationCache: the activations of one run, with TransformerLens's shorthand and residual-stream tools.

Stacks of residual components have the component axis first:
``[component, batch, pos, d_model]`` (no batch axis if the cache has none).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Union

import torch

from .utils import get_act_name

PosSlice = Union[None, int, slice, list[int], torch.Tensor]


def _slice_pos(tensor: torch.Tensor, pos_slice: PosSlice, pos_dim: int) -> torch.Tensor:
    if pos_slice is None:
        return tensor
    if isinstance(pos_slice, int):
        return tensor.narrow(pos_dim, pos_slice % tensor.shape[pos_dim], 1)
    if isinstance(pos_slice, slice):
        index = [slice(None)] * tensor.dim()
        index[pos_dim] = pos_slice
        return tensor[tuple(index)]
    return tensor.index_select(pos_dim, torch.as_tensor(pos_slice, device=tensor.device))


class ActivationCache:
    def __init__(self, cache_dict: dict[str, torch.Tensor], model: Any, has_batch_dim: bool = True) -> None:
        self.cache_dict = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim

    # ------------------------------------------------------------- dict-like
    def _name(self, key: Union[str, tuple]) -> str:
        if isinstance(key, str):
            return key if key in self.cache_dict else get_act_name(key)
        name, *rest = key
        layer = rest[0] if rest else None
        layer_type = rest[1] if len(rest) > 1 else None
        if layer is not None and layer < 0:
            layer += self.model.cfg.n_layers
        return get_act_name(name, layer, layer_type)

    def __getitem__(self, key: Union[str, tuple]) -> torch.Tensor:
        name = self._name(key)
        try:
            return self.cache_dict[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in this cache (was it left out by names_filter?)") from None

    def __contains__(self, key: Union[str, tuple]) -> bool:
        try:
            return self._name(key) in self.cache_dict
        except ValueError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return self.cache_dict.values()

    def items(self):
        return self.cache_dict.items()

    def to(self, device: Union[str, torch.device]) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self.cache_dict.items()}, self.model, self.has_batch_dim)

    def remove_batch_dim(self) -> "ActivationCache":
        if not self.has_batch_dim:
            return self
        for value in self.cache_dict.values():
            if value.shape[0] != 1:
                raise ValueError("remove_batch_dim needs a batch of one")
        return ActivationCache({k: v[0] for k, v in self.cache_dict.items()}, self.model, has_batch_dim=False)

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict)}"

    @property
    def _pos_dim(self) -> int:
        return 1 if self.has_batch_dim else 0

    # ------------------------------------------------------------- residual stream
    def accumulated_resid(
        self,
        layer: Optional[int] = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ):
        """The residual stream entering each block up to ``layer`` (None: all, plus the final one)."""
        n_layers = self.model.cfg.n_layers
        if layer is None or layer == n_layers:
            layer = n_layers
        elif layer < 0:
            layer += n_layers
        parts, labels = [], []
        for l in range(layer + 1):
            if l == n_layers:
                parts.append(self[("resid_post", n_layers - 1)])
                labels.append("final_post")
                continue
            parts.append(self[("resid_pre", l)])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self[("resid_mid", l)])
                labels.append(f"{l}_mid")
        stack = torch.stack([_slice_pos(p, pos_slice, self._pos_dim) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, None if layer == n_layers else layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ):
        """The outputs that sum to the residual stream entering block ``layer`` (None: the final one)."""
        n_layers = self.model.cfg.n_layers
        layer = n_layers if layer is None else (layer + n_layers if layer < 0 else layer)
        parts, labels = [], []
        if incl_embeds:
            parts.append(self["hook_embed"])
            labels.append("embed")
            if "hook_pos_embed" in self.cache_dict:
                parts.append(self["hook_pos_embed"])
                labels.append("pos_embed")
        for l in range(layer + (1 if mlp_input else 0)):
            if mode in ("all", "attn"):
                parts.append(self[("attn_out", l)])
                labels.append(f"{l}_attn_out")
            if mode in ("all", "mlp") and not (mlp_input and l == layer):
                parts.append(self[("mlp_out", l)])
                labels.append(f"{l}_mlp_out")
        stack = torch.stack([_slice_pos(p, pos_slice, self._pos_dim) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, None if layer == n_layers else layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: PosSlice = None,
        apply_ln: bool = False,
    ):
        """Each head's output into the residual stream, for layers before ``layer`` (-1: all).

        Uses cached ``hook_result`` when present, else derives it from ``hook_z`` and ``W_O``
        (so it need not be cached). The remainder is the residual minus all head outputs
        (embeddings, MLPs and attention biases).
        """
        n_layers = self.model.cfg.n_layers
        layer = n_layers if layer == -1 or layer is None else (layer + n_layers if layer < 0 else layer)
        parts, labels = [], []
        for l in range(layer):
            name = get_act_name("result", l)
            if name in self.cache_dict:
                result = self.cache_dict[name]
            else:
                z = self[("z", l)]  # [batch, pos, head, d_head]
                result = torch.einsum("...he,hed->...hd", z, self.model.blocks[l].attn.W_O.to(z.device, z.dtype))
            result = _slice_pos(result, pos_slice, self._pos_dim)
            parts.append(result.movedim(-2, 0))  # [head, batch, pos, d_model]
            labels.extend(f"L{l}H{h}" for h in range(result.shape[-2]))
        stack = torch.cat(parts) if parts else torch.zeros(0)
        if incl_remainder:
            total = self[("resid_pre", layer)] if layer < n_layers else self[("resid_post", n_layers - 1)]
            total = _slice_pos(total, pos_slice, self._pos_dim)
            stack = torch.cat([stack, (total - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, None if layer == n_layers else layer, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        pos_slice: PosSlice = None,
        batch_slice: Optional[slice] = None,
        has_batch_dim: bool = True,
    ) -> torch.Tensor:
        """Apply the norm read at ``layer`` (None: the final norm) to each component, with its cached scale.

        The scale is frozen (taken from this run), so the map is linear and the normalised
        components add up to the normalised residual. LayerNorm also centres each component.
        If the norm still has a weight (not folded), it is applied too; its bias is not
        (it belongs to no component).
        """
        n_layers = self.model.cfg.n_layers
        if layer is None or layer == n_layers:
            scale, norm = self["ln_final.hook_scale"], self.model.ln_final
        else:
            which = "ln2" if mlp_input else "ln1"
            scale, norm = self[("scale", layer, which)], getattr(self.model.blocks[layer], which)
        scale = _slice_pos(scale, pos_slice, self._pos_dim)
        if batch_slice is not None and self.has_batch_dim:
            scale = scale[batch_slice]
        stack = residual_stack
        if norm.centered:
            stack = stack - stack.mean(-1, keepdim=True)
        stack = stack / scale.to(stack.dtype)
        if norm.has_weights:
            stack = stack * norm.w.to(stack.device, stack.dtype)
        return stack

    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: Union[int, torch.Tensor],
        incorrect_tokens: Union[None, int, torch.Tensor] = None,
        pos_slice: PosSlice = None,
        batch_slice: Optional[slice] = None,
        has_batch_dim: bool = True,
    ) -> torch.Tensor:
        """Each component's direct contribution to the logit of ``tokens`` (minus ``incorrect_tokens``),
        after the final norm with its frozen scale: [component, ...]."""
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice)
        direction = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            direction = direction - self.model.tokens_to_residual_directions(incorrect_tokens)
        direction = direction.to(scaled.device, scaled.dtype)
        if direction.dim() == 1:
            return scaled @ direction
        # One direction per batch item (and position): broadcast over the component axis.
        while direction.dim() < scaled.dim():
            direction = direction.unsqueeze(-2) if direction.dim() < scaled.dim() - 1 else direction[None]
        return (scaled * direction).sum(-1)
