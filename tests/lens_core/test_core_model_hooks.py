"""Model-wide hooks (TransformerLens's add_hook) are seen by every thread; a call's own hooks are not."""

import threading

import torch

import hf_tiny
from lens_core import HookedTransformer


def test_model_wide_hooks_cross_threads_call_hooks_do_not():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    tokens = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
    seen = {"wide": [], "call": []}
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: seen["wide"].append(threading.current_thread().name))
    in_call, other_done = threading.Event(), threading.Event()

    def with_call_hook():
        def record(x, hook):
            seen["call"].append(threading.current_thread().name)
            in_call.set()
            other_done.wait(10)  # hold this call open while the other thread runs

        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", record)])

    def plain():
        in_call.wait(10)
        model(tokens)
        other_done.set()

    threads = [threading.Thread(target=with_call_hook, name="A"), threading.Thread(target=plain, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(seen["wide"]) == ["A", "B"]  # the model-wide hook ran in both threads
    assert seen["call"] == ["A"]  # the call's hook only in its own call, though B ran meanwhile
    model.reset_hooks()
    model(tokens)
    assert len(seen["wide"]) == 2
    assert not any(point._wide for point in model.hook_dict.values())


def test_unused_hook_points_keep_the_fused_paths():
    """A model-wide hook only on one point leaves every other point inactive (no extra work there)."""
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    model.add_hook("blocks.1.hook_resid_post", lambda x, hook: None)
    active = [name for name, point in model.hook_dict.items() if point.is_active()]
    assert active == ["blocks.1.hook_resid_post"]
    model.reset_hooks()
    assert not any(point.is_active() for point in model.hook_dict.values())


def test_hooked_transformer_from_cfg_is_initialised_like_transformer_lens():
    from lens_core import HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=500, n_ctx=32, seed=1)
    model = HookedTransformer(cfg)
    std = 0.8 / 64**0.5
    assert abs(model.W_E.std().item() - std) < 0.05 * std
    assert abs(model.W_in.std().item() - std) < 0.05 * std
    assert abs(model.W_O.std().item() - std / 2) < 0.05 * std  # scaled by 1/sqrt(2 n_layers)
    assert torch.equal(model.ln_final.w, torch.ones(64)) and not model.b_in.any() and not model.b_U.any()
    again = HookedTransformer(cfg)
    assert torch.equal(again.W_E, model.W_E)  # cfg.seed makes it reproducible
    assert torch.isfinite(model(torch.arange(10)[None])).all()
