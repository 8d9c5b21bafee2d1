"""Loading without a second copy of the model: our safetensors reader, in-place processing, the peak memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_tiny
from lens_core import HookedTransformer, ModelLoadError
from lens_core.loading import build_model
from lens_core.safetensors_io import read_file
from safetensors_layout import rewrite_aligned

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_reader_agrees_with_safetensors_and_owns_its_memory(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5), "bf16": torch.randn(7).to(torch.bfloat16), "f16": torch.tensor(1.5, dtype=torch.float16),
        "empty": torch.zeros(0, 4), "i64": torch.arange(6).reshape(2, 3), "bool": torch.tensor([True, False, True]),
        "f64": torch.randn(2, dtype=torch.float64),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    ours, reference = read_file(path), load_file(path)
    assert set(ours) == set(reference) == set(tensors)
    for name, tensor in reference.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    ours["f32"].add_(1)  # a buffer of its own: the file and the other tensors are untouched
    assert torch.equal(load_file(path)["f32"], tensors["f32"])
    storages = {t.untyped_storage().data_ptr() for t in ours.values() if t.numel()}
    assert len(storages) == sum(1 for t in ours.values() if t.numel())


@pytest.mark.parametrize("damage", ["truncated", "garbage header", "offsets past the end"])
def test_damaged_weights_are_a_load_error(tmp_path, damage):
    hf_tiny.gpt2().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage header":
        path.write_bytes(data[:8] + b"\xff" * 40 + data[48:])
    else:
        n = int.from_bytes(data[:8], "little")
        header = data[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[999999999,', 1)
        path.write_bytes(data[:8] + header + data[8 + n :])
    with pytest.raises(ModelLoadError, match="cannot read the weights"):
        HookedTransformer.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_in_place_processing_equals_processing_on_copies(family):
    hf = getattr(hf_tiny, family)()
    state = {name: tensor.detach().clone() for name, tensor in hf.state_dict().items()}
    before = {name: tensor.clone() for name, tensor in state.items()}
    copied = build_model(hf.config, state, owned=False)
    assert all(torch.equal(state[name], before[name]) for name in before)  # the caller's tensors are untouched
    in_place = build_model(hf.config, state, owned=True)
    assert state == {}  # consumed
    ours, reference = in_place.state_dict(), copied.state_dict()
    assert ours.keys() == reference.keys()
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name
    assert in_place.W_U.data_ptr() != in_place.W_E.data_ptr()


PEAK = r"""
import gc, re, sys
from lens_core import HookedTransformer, weight_arena, weight_cache
def kib(field):
    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1))
weight_cache.RACY_SECONDS = 0  # the checkpoint was written a moment ago
weight_arena.WRITE_DELAY_S = 0
choice = False if sys.argv[2] == "off" else sys.argv[3]
# A first load does the lazy imports (transformers' config classes); "hit": it also stores the entry.
HookedTransformer.from_pretrained(sys.argv[1], weight_cache=choice if sys.argv[2] == "hit" else False)
weight_arena.wait()
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = kib("VmRSS")
model = HookedTransformer.from_pretrained(sys.argv[1], weight_cache=choice)
assert model.weight_cache.startswith({"off": "off", "miss": "stored", "hit": "loaded"}[sys.argv[2]]), model.weight_cache
if sys.argv[2] == "hit":  # mapped: counted once read, as a first forward pass reads every weight
    for p in model.parameters():
        p.sum()
size = sum(p.numel() * p.element_size() for p in model.parameters())
print((kib("VmHWM") - before) * 1024 / size)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("layout,cache", [("as saved", "off"), ("aligned", "off"), ("as saved", "miss"),
                                          ("aligned", "miss"), ("as saved", "hit")])
def test_a_load_peaks_near_the_models_own_size(tmp_path, layout, cache):
    """A fresh process loads a ~60 MiB model: its peak RSS grows by at most 1.3x the parameters (1.78x before).
    As saved, no tensor is 64-byte aligned in the file, so the reader copies each out; aligned, each is mapped.
    With the weight cache: a miss processes into the entry's in-memory file (the model's memory, no second copy);
    a hit maps the entry (counted here after reading every weight once)."""
    checkpoint = tmp_path / "checkpoint"
    hf_tiny.gpt2(n_layer=4, n_embd=512, n_head=8, vocab_size=8192, n_positions=256).save_pretrained(checkpoint)
    if layout == "aligned":
        rewrite_aligned(checkpoint / "model.safetensors")
    out = subprocess.run([sys.executable, "-c", PEAK, str(checkpoint), cache, str(tmp_path / "cache")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ratio = float(out.stdout.strip().splitlines()[-1])
    assert 0.5 < ratio <= 1.3, ratio
