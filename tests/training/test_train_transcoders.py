"""The transcoder training script on a tiny random model: deterministic, resumable, and it learns."""

from __future__ import annotations

import numpy as np
import torch
from hf_tiny import gpt2

from lens_core import HookedTransformer
from training.train_transcoders import parse_args, train


def _run(tmp_path, name, *extra):
    model = HookedTransformer.from_hf_model(gpt2(0))
    stream = np.random.default_rng(0).integers(1, 64, size=4000).astype(np.int32)
    args = parse_args(["--work-dir", str(tmp_path / name), "--d-sae", "64", "--k", "4", "--steps", "8",
                       "--batch-tokens", "64", "--buffer-rows", "8", "--warmup", "2", "--eval-every", "4",
                       "--dead-tokens", "100", "--quiet", "--log-every", "1000", *extra])
    eval_rows = torch.from_numpy(stream[:4 * 32].reshape(4, 32).astype(np.int64))
    return train(model, stream, args, eval_rows=eval_rows, log=lambda s: None)


def test_training_is_deterministic_and_resumable(tmp_path):
    whole = _run(tmp_path, "a")
    _run(tmp_path, "c", "--stop-at", "3")
    resumed = _run(tmp_path, "c", "--resume")
    for layer in whole.layers:
        for name, tensor in whole[layer].state_dict().items():
            assert torch.equal(tensor, resumed[layer].state_dict()[name]), name
        norms = whole[layer].W_dec.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    first, last = whole.history[0], whole.history[-1]
    assert [h["step"] for h in whole.history] == [4, 8]
    assert last["layers"][0]["l0"] <= 4
    assert sum(r["fvu"] for r in last["layers"].values()) < sum(r["fvu"] for r in first["layers"].values()) or \
        last["loss_increase"] < first["loss_increase"]
