"""ActivationCache's neuron-level decompositions (TransformerLens's names and semantics).

Each MLP neuron writes ``post[..., n] * W_out[n]`` into the residual stream. These stacks
are large (``[layer * d_mlp, batch, pos, d_model]``): pass ``project_output_onto`` (a
``[d_model]`` or ``[d_model, k]`` direction) to project each neuron's output before it is
expanded, so the ``d_mlp x d_model`` intermediate is never formed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .utils import Slice


def _as_2d(project: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], bool]:
    if project is None:
        return None, False
    return (project[:, None], True) if project.dim() == 1 else (project, False)


class NeuronDecompositionMixin:
    cache_dict: dict
    model: Any

    def get_neuron_results(self, layer: int, neuron_slice: Any = None, pos_slice: Any = None,
                           project_output_onto: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each neuron's output of one layer: [..., neuron, d_model] (or projected: [..., neuron(, k)])."""
        neuron_slice, pos_slice = Slice(neuron_slice), Slice(pos_slice)
        acts = pos_slice.apply(self[("post", layer)], dim=-2)
        W_out = self.model.blocks[layer].mlp.W_out
        acts, W_out = neuron_slice.apply(acts, dim=-1), neuron_slice.apply(W_out, dim=0)
        W_out = W_out.to(acts.device, acts.dtype)
        if project_output_onto is None:
            return acts[..., None] * W_out
        projected = W_out @ project_output_onto.to(acts.device, acts.dtype)
        return acts * projected if project_output_onto.dim() == 1 else acts[..., None] * projected

    def stack_neuron_results(self, layer: Optional[int], pos_slice: Any = None, neuron_slice: Any = None,
                             return_labels: bool = False, incl_remainder: bool = False, apply_ln: bool = False,
                             project_output_onto: Optional[torch.Tensor] = None, mlp_input: bool = False):
        """Every neuron's output for layers before ``layer`` (None/-1: all): [layer * neuron, ..., d_model]."""
        layer = self._layer(layer)
        neuron_slice = Slice.unwrap(neuron_slice)
        if neuron_slice.mode == "int":
            neuron_slice = Slice([neuron_slice.slice])
        pos_slice = Slice(pos_slice)
        project, squeeze = _as_2d(project_output_onto)
        ids = neuron_slice.apply(torch.arange(self.model.cfg.d_mlp), dim=0).tolist()
        labels = [f"L{l}N{n}" for l in range(layer) for n in ids]
        target = ("resid_mid", layer) if mlp_input else ("resid_post", layer - 1)
        if apply_ln and project is not None:
            # Normalise each neuron's output before projecting (linear with the frozen scale).
            parts = [self.apply_ln_to_stack(self.get_neuron_results(l, neuron_slice, pos_slice).movedim(-2, 0), layer,
                                            mlp_input=mlp_input, pos_slice=pos_slice) @ project for l in range(layer)]
            stack = torch.cat(parts) if parts else self._empty(pos_slice, project.shape[-1])
            if incl_remainder:
                whole = self.apply_ln_to_stack(pos_slice.apply(self[target], dim=-2)[None], layer, mlp_input=mlp_input,
                                               pos_slice=pos_slice)[0] @ project
                stack = torch.cat([stack, (whole - stack.sum(0))[None]])
                labels.append("remainder")
        else:
            parts = [self.get_neuron_results(l, neuron_slice, pos_slice, project).movedim(-2, 0) for l in range(layer)]
            stack = torch.cat(parts) if parts else self._empty(pos_slice, None if project is None else project.shape[-1])
            if incl_remainder:
                whole = pos_slice.apply(self[target], dim=-2)
                whole = whole @ project if project is not None else whole
                stack = torch.cat([stack, (whole - stack.sum(0))[None]])
                labels.append("remainder")
            if apply_ln:
                stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        if squeeze:
            stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack

    def _empty(self, pos_slice: Slice, width: Optional[int]) -> torch.Tensor:
        src = pos_slice.apply(self["hook_embed"], dim=-2)
        shape = src.shape if width is None else (*src.shape[:-1], width)
        return src.new_zeros((0, *shape))

    def get_full_resid_decomposition(self, layer: Optional[int] = None, mlp_input: bool = False, expand_neurons: bool = True,
                                     apply_ln: bool = False, pos_slice: Any = None, return_labels: bool = False,
                                     project_output_onto: Optional[torch.Tensor] = None):
        """The residual stream entering ``layer`` split into every head, every neuron (or MLP layer),
        the embeddings and the summed biases, in TransformerLens's order: heads, neurons/MLPs,
        embed, pos_embed, bias. The rows add up to the residual stream."""
        layer = self._layer(layer)
        pos_slice = Slice(pos_slice)
        project, squeeze = _as_2d(project_output_onto)
        heads, labels = self.stack_head_results(layer + (1 if mlp_input else 0), pos_slice=pos_slice, return_labels=True)
        parts = [heads]
        if not getattr(self.model.cfg, "attn_only", False) and layer > 0:
            if expand_neurons:
                neurons, neuron_labels = self.stack_neuron_results(layer, pos_slice=pos_slice, return_labels=True,
                                                                   mlp_input=mlp_input)
            else:
                neurons, neuron_labels = self.decompose_resid(layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                                              incl_embeds=False, mode="mlp", return_labels=True)
            parts.append(neurons)
            labels = labels + neuron_labels
        for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
            if name in self.cache_dict:
                parts.append(pos_slice.apply(self[name], dim=-2)[None])
                labels.append(label)
        bias = self.model.accumulated_bias(layer, mlp_input, include_mlp_biases=expand_neurons)
        parts.append(bias.to(heads.device, heads.dtype).expand((1, *heads.shape[1:])))
        labels.append("bias")
        stack = torch.cat(parts)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        if project is not None:
            stack = stack @ project.to(stack.device, stack.dtype)
            if squeeze:
                stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack
