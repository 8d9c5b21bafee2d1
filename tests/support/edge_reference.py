"""The autograd reference for edge attribution: d metric / d one receiver's input.

Receivers are named as the edge graph names them: ``"logits"``, ``"MLP1.in"``, ``"L2H1.q"`` (or
``"L2KV0.k"`` for a grouped key/value head). The receiver's input is swapped for a leaf tensor and the
logit difference ``answer - wrong`` at the last position is differentiated by autograd.
"""

from __future__ import annotations

import torch


def receiver_gradient(model, resid0: torch.Tensor, name: str, answer: int, wrong: int) -> torch.Tensor:
    n = model.cfg.n_layers
    if name == "logits":
        point, head = f"blocks.{n - 1}.hook_resid_post", None
    elif name.endswith(".in"):
        point, head = f"blocks.{name[3]}.hook_mlp_in", None
    else:
        point, head = f"blocks.{name[1]}.hook_{name[-1]}_input", int(name.split(".")[0][2:].lstrip("KVH"))
    leaf = {}

    def swap(x, hook):
        value = (x if head is None else x[:, :, head]).detach().clone().requires_grad_(True)
        leaf["x"] = value
        if head is None:
            return value
        parts = list(x.unbind(2))
        parts[head] = value
        return torch.stack(parts, dim=2)

    with torch.enable_grad():
        logits = model.run_with_hooks(resid0, start_at_layer=0, fwd_hooks=[(point, swap)])
        metric = logits[:, -1, answer] - logits[:, -1, wrong]
        (grad,) = torch.autograd.grad(metric.sum(), [leaf["x"]])
    return grad
