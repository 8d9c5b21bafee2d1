"""Hooks against transformer-lens 4.3.0: model-wide hooks, permanent hooks, hook.ctx, the hooks()
context with and without reset_hooks_end, HookPoint.add_hook/remove_hooks, backward hooks."""

from __future__ import annotations

import torch

from tl_pairs import assert_same


def _ablate_head(head):
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook


def _forward(model, tokens):
    with torch.no_grad():
        return model(tokens)


def test_model_wide_hooks_and_reset(models):
    ours, bridge, tokens = models
    clean = _forward(ours, tokens)
    for model in (ours, bridge):
        model.add_hook("blocks.1.attn.hook_z", _ablate_head(1))
        model.add_hook(lambda name: name == "blocks.0.hook_mlp_out", lambda x, hook: x * 0.5)
    hooked = _forward(ours, tokens)
    assert_same(hooked, _forward(bridge, tokens))
    assert (hooked - clean).abs().max() > 1e-3
    for model in (ours, bridge):
        model.add_perma_hook("blocks.0.attn.hook_z", _ablate_head(0))
        model.reset_hooks()  # the permanent hook stays
    perma = _forward(ours, tokens)
    assert_same(perma, _forward(bridge, tokens))
    assert (perma - clean).abs().max() > 1e-3
    for model in (ours, bridge):
        model.reset_hooks(including_permanent=True)
    assert_same(_forward(ours, tokens), clean, rel=0)
    assert_same(_forward(bridge, tokens), clean)


def test_hook_ctx_and_hook_point_add_remove(models):
    ours, bridge, tokens = models
    outs = []
    for model in (ours, bridge):
        def remember(x, hook):
            hook.ctx["seen"] = x.detach().clone()

        def reuse(x, hook):  # a later point reads what an earlier hook left in its own ctx
            return x + 0.1 * model.hook_dict["blocks.0.hook_resid_pre"].ctx["seen"]

        model.hook_dict["blocks.0.hook_resid_pre"].add_hook(remember)
        model.hook_dict["blocks.1.hook_resid_pre"].add_hook(reuse)
        outs.append(_forward(model, tokens))
        assert "seen" in model.hook_dict["blocks.0.hook_resid_pre"].ctx
        model.hook_dict["blocks.1.hook_resid_pre"].remove_hooks()
        model.reset_hooks()  # clears contexts too
        assert model.hook_dict["blocks.0.hook_resid_pre"].ctx == {}
    assert_same(outs[0], outs[1])


def test_hooks_context_and_run_with_hooks_reset_hooks_end(models):
    ours, bridge, tokens = models
    clean = _forward(ours, tokens)
    fwd = [("blocks.1.attn.hook_z", _ablate_head(2))]
    results = []
    for model in (ours, bridge):
        with torch.no_grad(), model.hooks(fwd_hooks=fwd) as hooked_model:
            inside = hooked_model(tokens)
        after = _forward(model, tokens)
        with torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=fwd, reset_hooks_end=False)
        kept = _forward(model, tokens)  # the hook outlived its call
        model.reset_hooks()
        results.append((inside, after, kept))
    for mine, theirs in zip(results[0], results[1]):
        assert_same(mine, theirs)
    assert_same(results[0][1], clean, rel=0)
    assert (results[0][2] - clean).abs().max() > 1e-3


def test_backward_hooks(models):
    ours, bridge, tokens = models
    grads = []
    for model in (ours, bridge):
        seen = {}
        model.add_hook("hook_embed", lambda x, hook: x.requires_grad_(True) if not x.requires_grad else None)
        # (Not hook_resid_mid: the bridge's alias for it sees only the gradient through ln2, not the
        # residual path; ours is the full gradient, as autograd gives it.)
        for name in ("blocks.1.hook_resid_pre", "ln_final.hook_normalized"):
            model.add_hook(name, lambda grad, hook, name=name: seen.__setitem__(name, grad.detach().clone()), dir="bwd")
        model(tokens, return_type="loss").backward()
        model.reset_hooks()
        grads.append(seen)
    for name in ("blocks.1.hook_resid_pre", "ln_final.hook_normalized"):
        assert_same(grads[0][name], grads[1][name], rel=1e-4)
