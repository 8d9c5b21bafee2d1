"""Hooks belong to the call: threads sharing one model never see each other's hooks."""

import threading

import torch

import hf_tiny
from lens_core import HookedTransformer


def _plan(worker: int):
    """Each worker gets its own hooks: some ablate a head, some scale a residual, some only read."""
    layer, head = worker % 3, worker % 4

    def ablate(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    def scale(resid, hook):
        return resid * (1.0 + 0.1 * worker)

    if worker % 3 == 0:
        return [(f"blocks.{layer}.attn.hook_z", ablate)]
    if worker % 3 == 1:
        return [(f"blocks.{layer}.hook_resid_post", scale), (f"blocks.{(layer + 1) % 3}.attn.hook_z", ablate)]
    return [("blocks.1.attn.hook_pattern", lambda p, hook: None)]  # read-only hook, different code path


def test_eight_threads_with_different_hooks_match_serial_runs_exactly():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    tokens = [torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(w)) for w in range(8)]
    serial = [model.run_with_hooks(tokens[w], fwd_hooks=_plan(w)) for w in range(8)]
    plain = model(tokens[0])
    assert not torch.allclose(serial[0], plain)  # the hooks really change the output

    results = {w: [] for w in range(8)}
    errors = []
    barrier = threading.Barrier(8)

    def work(w):
        try:
            barrier.wait()
            for _ in range(20):
                results[w].append(model.run_with_hooks(tokens[w], fwd_hooks=_plan(w)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for w in range(8):
        assert len(results[w]) == 20
        for out in results[w]:
            assert torch.equal(out, serial[w]), f"worker {w} saw another thread's hooks"
    assert torch.equal(model(tokens[0]), plain)  # nothing left attached
