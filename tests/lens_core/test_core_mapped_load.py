"""Loading from memory-mapped safetensors: the same weights as reading and processing in place, no weight left
viewing the file, copy-on-write mappings, misaligned tensors copied."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

import hf_tiny
from lens_core import HookedTransformer
from lens_core.features.mmap_io import file_backed
from lens_core.loading import build_model
from lens_core.safetensors_io import map_file, read_file
from safetensors_layout import CODES, write_safetensors

STEPS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


def test_mapped_tensors_agree_with_safetensors_and_writes_stay_in_memory(tmp_path):
    tensors = {"f32": torch.randn(4, 4), "i64": torch.arange(8).reshape(2, 4), "bf16": torch.randn(32).to(torch.bfloat16),
               "empty": torch.zeros(0, 4), "bool": torch.tensor([True, False, True])}
    codes = {"f32": "F32", "i64": "I64", "bf16": "BF16", "empty": "F32", "bool": "BOOL"}
    path = tmp_path / "w.safetensors"
    write_safetensors(path, tensors, codes, header_to=64)  # every tensor 64-byte aligned: all mapped
    mapped = map_file(path)
    for name, tensor in load_file(path).items():
        assert mapped.tensors[name].dtype == tensor.dtype and torch.equal(mapped.tensors[name], tensor), name
    for name in ("f32", "i64", "bf16", "bool"):
        assert mapped.aliases(mapped.tensors[name]) and file_backed(mapped.tensors[name], path) is not False, name
    mapped.tensors["f32"].add_(1)  # copy-on-write: this process's page changes, the file does not
    assert torch.equal(load_file(path)["f32"], tensors["f32"])
    assert torch.equal(mapped.tensors["f32"], tensors["f32"] + 1)
    assert not mapped.aliases(mapped.tensors["f32"].clone())


def test_a_misaligned_tensor_gets_a_buffer_of_its_own(tmp_path):
    """Matrix-vector products can round differently on misaligned data: such a tensor is copied, not viewed."""
    tensors = {"a": torch.tensor([1, 2, 3], dtype=torch.uint8), "b": torch.randn(4, 6)}
    path = tmp_path / "odd.safetensors"
    write_safetensors(path, tensors, {"a": "U8", "b": "F32"}, header_to=64)  # b starts 3 bytes after a 64-byte boundary
    mapped = map_file(path)
    assert all(torch.equal(mapped.tensors[name], tensor) for name, tensor in tensors.items())
    assert mapped.aliases(mapped.tensors["a"])
    assert not mapped.aliases(mapped.tensors["b"]) and mapped.tensors["b"].data_ptr() % 64 == 0


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
@pytest.mark.parametrize("steps", ["all", "none"])
@pytest.mark.parametrize("layout", ["as saved", "data at 64 bytes"])
def test_mapped_load_equals_processing_read_weights_in_place(tmp_path, family, steps, layout):
    """As saved (here: no tensor 64-byte aligned), the reader copies every tensor out and processing runs in place
    on the copies; with the data section moved to a 64-byte boundary, the aligned tensors are mapped and processed
    out of place, the others copied: the same weights either way."""
    hf = getattr(hf_tiny, family)()
    hf.save_pretrained(tmp_path)
    if layout != "as saved":
        tensors = load_file(tmp_path / "model.safetensors")
        write_safetensors(tmp_path / "model.safetensors", tensors, {n: CODES[t.dtype] for n, t in tensors.items()}, 64)
        mapped = map_file(tmp_path / "model.safetensors")
        assert any(mapped.aliases(t) for t in mapped.tensors.values())
    options = {step: steps == "all" for step in STEPS}
    model = HookedTransformer.from_pretrained(str(tmp_path), **options)
    reference = build_model(AutoConfig.from_pretrained(tmp_path), read_file(tmp_path / "model.safetensors"), owned=True,
                            **options)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    path = tmp_path / "model.safetensors"
    assert not any(file_backed(p, path) for p in model.parameters())  # unprocessed weights too were copied out
    assert model.W_U.data_ptr() != model.W_E.data_ptr()
    before = {name: tensor.clone() for name, tensor in ours.items()}
    with open(path, "r+b") as f:  # rewrite the checkpoint in place: the loaded model does not see it
        f.seek(4096)
        f.write(b"\0" * (path.stat().st_size - 4096))
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
