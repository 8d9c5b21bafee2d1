import pytest
import torch

from lens_core.experiments import PatchingRequest, PathPatchingRequest, activation_patching, path_patching

from exp_tiny import random_tokens, tiny

ANSWER, WRONG = 7, 13


def _direct(model, base, source, sender, receiver):
    """Path patching written at the level of attn_out: add the sender head's change in output to its layer's
    attn_out, pin every other attention layer to its base output, then (for a head receiver) replace the
    receiver's q/k/v input in a normal base run. Returns the logit difference at the last position."""
    cfg = model.cfg
    sl, sh = sender
    _, base_cache = model.run_with_cache(base)
    _, source_cache = model.run_with_cache(source)
    delta = (source_cache["z", sl][0, :, sh] - base_cache["z", sl][0, :, sh]) @ model.blocks[sl].attn.W_O[sh]
    last = cfg.n_layers if receiver == "resid_final" else receiver[0]
    hooks = []
    for l in range(last):
        base_out = base_cache["attn_out", l]
        if l == sl:
            hooks.append((f"blocks.{l}.hook_attn_out", lambda act, hook, b=base_out: b + delta))
        elif l > sl:
            hooks.append((f"blocks.{l}.hook_attn_out", lambda act, hook, b=base_out: b))
    if receiver == "resid_final":
        logits = model.run_with_hooks(base, fwd_hooks=hooks)[0, -1]
        return float(logits[ANSWER] - logits[WRONG])
    rl, rh, which = receiver
    name = f"blocks.{rl}.attn.hook_{which}"
    recorded = {}
    hooks.append((name, lambda act, hook: recorded.setdefault("x", act.clone())))
    model.run_with_hooks(base, fwd_hooks=hooks)
    index = rh if which == "q" else rh // cfg.n_kv_groups

    def patch(act, hook):
        act = act.clone()
        act[:, :, index] = recorded["x"][:, :, index]
        return act

    logits = model.run_with_hooks(base, fwd_hooks=[(name, patch)])[0, -1]
    return float(logits[ANSWER] - logits[WRONG])


def _request(clean, corrupted, **kw):
    return PathPatchingRequest(clean_tokens=tuple(clean[0].tolist()), corrupted_tokens=tuple(corrupted[0].tolist()),
                               answer=ANSWER, wrong_answer=WRONG, **kw)


@pytest.mark.parametrize("family,receiver", [("gpt2", (2, 1, "q")), ("gpt2", (2, 2, "v")), ("llama", (2, 3, "k")),
                                             ("neox", (1, 0, "q")), ("gpt2", "resid_final"), ("llama", "resid_final")])
def test_sweep_matches_direct_computation(family, receiver):
    model = tiny(family)
    clean, corrupted = random_tokens(6, seed=30), random_tokens(6, seed=31)
    result = path_patching(model, _request(clean, corrupted, receivers=(receiver,), memory_budget_mb=0.01))
    first = model.cfg.n_layers if receiver == "resid_final" else receiver[0]
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            if l >= first:
                assert torch.isnan(result.logit_diff[l, h])
                continue
            # base = corrupted, senders from clean (denoising)
            assert float(result.logit_diff[l, h]) == pytest.approx(_direct(model, corrupted, clean, (l, h), receiver), abs=1e-5)


def test_given_senders_and_last_layer_equals_activation_patching():
    model = tiny("gpt2")
    clean, corrupted = random_tokens(6, seed=32), random_tokens(6, seed=33)
    n = model.cfg.n_layers
    act = activation_patching(model, PatchingRequest(clean_tokens=tuple(clean[0].tolist()),
                                                     corrupted_tokens=tuple(corrupted[0].tolist()), answer=ANSWER,
                                                     wrong_answer=WRONG, sweep="head_out_all_pos", direction="noise"))
    for h in range(model.cfg.n_heads):
        # Nothing but the final MLP lies after a last-layer head: both experiments are the same intervention.
        single = path_patching(model, _request(clean, corrupted, receivers=("resid_final",), senders=((n - 1, h),), direction="noise"))
        assert single.logit_diff.shape == (1,)
        assert float(single.logit_diff[0]) == pytest.approx(float(act.logit_diff[n - 1, h]), abs=1e-5)
    assert single.clean_logit_diff == pytest.approx(act.clean_logit_diff)


def test_path_patching_validation():
    model = tiny("gpt2")
    clean, corrupted = random_tokens(6, seed=32), random_tokens(6, seed=33)
    with pytest.raises(ValueError, match="not before"):
        path_patching(model, _request(clean, corrupted, receivers=((1, 0, "q"),), senders=((1, 2),)))
    with pytest.raises(ValueError, match="'q', 'k' or 'v'"):
        path_patching(model, _request(clean, corrupted, receivers=((1, 0, "z"),)))
    with pytest.raises(ValueError, match="not a mix"):
        path_patching(model, _request(clean, corrupted, receivers=("resid_final", (1, 0, "q"))))
    with pytest.raises(ValueError, match="layer"):
        path_patching(model, _request(clean, corrupted, receivers=((5, 0, "q"),)))
