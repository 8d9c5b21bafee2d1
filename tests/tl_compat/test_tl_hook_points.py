"""HookPoint's own surface against transformer-lens 4.3.0: handles, prepend order, levels, has_hooks
and remove_hooks per direction, list_hooks, mod_dict / hook_points(), hooks(clear_contexts=True),
backward hooks passed to run_with_hooks / hooks()."""

from __future__ import annotations

import pytest
import torch

from tl_pairs import assert_same

POINT = "blocks.0.hook_resid_pre"


def _order_log(model):
    """Run with three hooks (one prepended) and return the order they ran in."""
    log = []
    point = model.hook_dict[POINT]
    point.add_hook(lambda x, hook: log.append("a"))
    point.add_hook(lambda x, hook: log.append("b"))
    point.add_hook(lambda x, hook: log.append("first"), prepend=True)
    return point, log


def test_prepend_handles_and_removal(models):
    ours, bridge, tokens = models
    logs = []
    for model in (ours, bridge):
        point, log = _order_log(model)
        with torch.no_grad():
            model(tokens)
        logs.append(list(log))
        handles = point.fwd_hooks
        assert [h.is_permanent for h in handles] == [False] * 3
        handles[0].hook.remove()  # a handle detaches its own hook only
        log.clear()
        with torch.no_grad():
            model(tokens)
        logs.append(list(log))
        model.reset_hooks()
    assert logs[0] == logs[2] == ["first", "a", "b"]
    assert logs[1] == logs[3] == ["a", "b"]


def test_has_hooks_and_remove_hooks_by_direction_level_permanence(models):
    ours, bridge, tokens = models
    answers = []
    for model in (ours, bridge):
        point = model.hook_dict[POINT]
        point.add_hook(lambda x, hook: None, level=3)
        point.add_hook(lambda g, hook: None, dir="bwd", is_permanent=True)
        seen = [point.has_hooks(), point.has_hooks("fwd"), point.has_hooks("bwd"), point.has_hooks("bwd", including_permanent=False),
                point.has_hooks(level=3), point.has_hooks(level=2), len(point.fwd_hooks), len(point.bwd_hooks)]
        point.remove_hooks("fwd", level=2)  # nothing at level 2
        seen.append(point.has_hooks("fwd"))
        point.remove_hooks("both")  # the permanent backward hook stays
        seen += [point.has_hooks("fwd"), point.has_hooks("bwd")]
        point.remove_hooks("bwd", including_permanent=True)
        seen.append(point.has_hooks())
        with pytest.raises(ValueError):
            point.has_hooks("sideways")
        answers.append(seen)
    assert answers[0] == answers[1] == [True, True, True, False, True, False, 1, 1, True, False, True, False]


def test_list_hooks_mod_dict_and_hook_points(models):
    ours, bridge, tokens = models
    for model in (ours, bridge):
        model.add_hook(POINT, lambda x, hook: None)
        model.add_perma_hook("blocks.1.hook_resid_post", lambda x, hook: None)
    for name in (POINT, "blocks.1.hook_resid_post"):
        assert len(ours.list_hooks()[name]) == len(bridge.list_hooks()[name]) == 1
    assert "blocks.1.hook_resid_post" not in ours.list_hooks(including_permanent=False)
    assert "blocks.1.hook_resid_post" not in bridge.list_hooks(including_permanent=False)
    assert set(ours.list_hooks()) == {POINT, "blocks.1.hook_resid_post"}
    for model in (ours, bridge):
        model.reset_hooks(including_permanent=True)
        assert model.list_hooks() == {}
    # hook_points() gives the points themselves, each knowing its name; mod_dict holds modules and points
    names = [point.name for point in ours.hook_points()]
    assert names == list(ours.hook_dict) and set(names) <= set(bridge.hook_dict)  # (the bridge names its points by its own modules)
    for name in ("blocks", "blocks.0", "embed", "unembed"):  # (below a block the bridge names its own parts)
        assert name in ours.mod_dict and name in bridge.mod_dict, name
    assert set(ours.hook_dict) <= set(ours.mod_dict)
    assert ours.mod_dict[POINT] is ours.hook_dict[POINT] and ours.mod_dict["blocks.0"] is ours.blocks[0]


def test_hooks_clear_contexts_and_levels(models):
    ours, bridge, tokens = models
    for model in (ours, bridge):
        model.hook_dict["blocks.1.hook_resid_pre"].ctx["kept?"] = 1

        def stash(x, hook):
            hook.ctx["x"] = 1

        with torch.no_grad(), model.hooks(fwd_hooks=[(POINT, stash)], clear_contexts=True):
            model(tokens)
            assert model.hook_dict[POINT].ctx == {"x": 1}
        # Only the touched points are cleared: the 4.3.0 bridge's documented behaviour (its legacy
        # HookedRootModule.hooks clears every point); ours also must not wipe other sessions' ctx.
        assert model.hook_dict[POINT].ctx == {} and model.hook_dict["blocks.1.hook_resid_pre"].ctx == {"kept?": 1}
        # reset_hooks_end=False leaves the hooks on, tagged with the context level (1); removable by level
        with model.hooks(fwd_hooks=[(POINT, stash)], reset_hooks_end=False):
            pass
        assert model.hook_dict[POINT].has_hooks(level=1) and model.context_level == 0
        model.reset_hooks(level=1)
        assert not model.hook_dict[POINT].has_hooks()
        model.clear_contexts()


def test_run_with_hooks_bwd_hooks(models):
    """Backward hooks given to the call. TransformerLens removes them when run_with_hooks returns (before
    any backward pass; it warns), so the comparison keeps them (reset_hooks_end=False); ours, call-scoped,
    are attached to the activations during the forward pass and fire on the later backward too."""
    ours, bridge, tokens = models
    name = "blocks.1.hook_resid_pre"
    grads = []
    for model in (ours, bridge):
        seen = {}
        model.add_hook("hook_embed", lambda x, hook: x.requires_grad_(True) if not x.requires_grad else None)
        loss = model.run_with_hooks(tokens, return_type="loss", reset_hooks_end=False,
                                    bwd_hooks=[(name, lambda g, hook: seen.__setitem__(name, g.detach().clone()))])
        loss.backward()
        model.reset_hooks()
        grads.append(seen[name])
    assert_same(grads[0], grads[1], rel=1e-4)
    # call-scoped (the default): the hook still sees the backward pass of that call's graph
    seen = {}
    embed_hook = [("hook_embed", lambda x, hook: x.requires_grad_(True))]
    ours.run_with_hooks(tokens, return_type="loss", fwd_hooks=embed_hook,
                        bwd_hooks=[(name, lambda g, hook: seen.__setitem__("g", g))]).backward()
    assert_same(seen["g"], grads[1], rel=1e-4)
    assert not ours.hook_dict[name].has_hooks()
