"""The weight cache: a load from it equals a load that processes, bit for bit; nothing stale, damaged or
written since is ever served; the entry is written in the background without a race; the bound holds."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

import hf_tiny
import hf_tiny_families
from lens_core import HookedTransformer, weight_arena, weight_cache
from lens_core.safetensors_io import PADDING_PREFIX, SafetensorsError, header_bytes
from safetensors_layout import rewrite_aligned

TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3]])
BUILDERS = {**hf_tiny.FAMILIES, "gemma2": hf_tiny_families.gemma2, "qwen3": hf_tiny_families.qwen3,
            "olmo2": hf_tiny_families.olmo2}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Checkpoints here are seconds old, and the writer need not wait for a first forward pass."""
    monkeypatch.setattr(weight_cache, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(weight_arena, "WRITE_DELAY_S", 0.0)
    yield
    weight_arena.wait()


def load(path, cache, **kwargs) -> HookedTransformer:
    model = HookedTransformer.from_pretrained(str(path), weight_cache=cache, **kwargs)
    weight_arena.wait()
    return model


def assert_same_model(ours: HookedTransformer, reference: HookedTransformer) -> None:
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert torch.equal(ours(TOKENS), reference(TOKENS))
    assert ours.cfg.normalization_type == reference.cfg.normalization_type
    assert ours.processing == reference.processing and ours.processing_skipped == reference.processing_skipped


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cached_load_equals_a_load_that_processes(tmp_path, family, dtype):
    checkpoint = hf_tiny.save_as_directory(BUILDERS[family](), tmp_path / "checkpoint")
    cache = tmp_path / "cache"
    reference = load(checkpoint, False, dtype=dtype)
    assert reference.weight_cache == "off"
    stored = load(checkpoint, cache, dtype=dtype)
    assert stored.weight_cache.startswith("stored in ")
    assert_same_model(stored, reference)
    cached = load(checkpoint, cache, dtype=dtype)
    assert cached.weight_cache.startswith("loaded from ")
    assert_same_model(cached, reference)
    assert cached._weights_hash == reference.weights_hash()  # kept in the entry, not hashed again


@pytest.mark.parametrize("layout", ["as saved", "aligned"])
def test_both_file_layouts_and_every_processing_choice(tmp_path, layout):
    """Misaligned tensors are copied into the entry and processed there; aligned ones are read from the file.
    Each processing choice is an entry of its own."""
    checkpoint = tmp_path / "checkpoint"
    hf_tiny.gpt2().save_pretrained(checkpoint)
    if layout == "aligned":
        rewrite_aligned(checkpoint / "model.safetensors")
    cache = tmp_path / "cache"
    nothing = dict.fromkeys(("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"), False)
    for choice in ({}, {"fold_ln": False}, {"center_writing_weights": False, "center_unembed": False},
                   {"fold_value_biases": False}, nothing):  # nothing: the unembedding stays tied to W_E
        reference = load(checkpoint, False, **choice)
        assert_same_model(load(checkpoint, cache, **choice), reference)
        assert_same_model(load(checkpoint, cache, **choice), reference)
    assert len(list(cache.glob("*.safetensors"))) == 5


def test_the_entry_is_a_safetensors_file_with_the_models_weights(tmp_path):
    checkpoint = hf_tiny.save_as_directory(hf_tiny.llama(), tmp_path / "checkpoint")
    model = load(checkpoint, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    tensors = load_file(entry)  # the reference reader accepts it, padding entries and all
    weights = {name: t for name, t in tensors.items() if not name.startswith(PADDING_PREFIX)}
    state = model.state_dict()
    assert weights.keys() == state.keys() and all(torch.equal(weights[n], state[n]) for n in state)


def test_a_changed_checkpoint_is_processed_again(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    hf_tiny.save_as_directory(hf_tiny.gpt2(seed=0), checkpoint)
    cache = tmp_path / "cache"
    first = load(checkpoint, cache)
    time.sleep(0.05)  # file times are coarse: past one tick
    hf_tiny.gpt2(seed=1).save_pretrained(checkpoint)  # same shapes, same size, other weights
    second = load(checkpoint, cache)
    assert second.weight_cache.startswith("stored in ")
    assert_same_model(second, load(checkpoint, False))
    assert not torch.equal(first.W_E, second.W_E)


def test_a_checkpoint_written_a_moment_ago_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_cache, "RACY_SECONDS", 60.0)
    checkpoint = hf_tiny.save_as_directory(hf_tiny.gpt2(), tmp_path / "checkpoint")
    model = load(checkpoint, tmp_path / "cache")
    assert model.weight_cache == "not cached: a checkpoint file changed in the last 60 s"
    assert not (tmp_path / "cache").exists()


def test_writing_a_loaded_weight_never_reaches_the_entry(tmp_path, monkeypatch):
    """Both models view pages of the entry's file copy-on-write. Writes made right after a miss, before the
    background writer starts, and writes into a model loaded from the entry, stay in that model."""
    monkeypatch.setattr(weight_arena, "WRITE_DELAY_S", 0.5)
    checkpoint = hf_tiny.save_as_directory(hf_tiny.gpt2(), tmp_path / "checkpoint")
    cache = tmp_path / "cache"
    reference = load(checkpoint, False)
    stored = HookedTransformer.from_pretrained(checkpoint, weight_cache=cache)
    with torch.no_grad():
        stored.W_E.zero_()
        stored.blocks[0].attn.W_Q.add_(1.0)
    weight_arena.wait()
    cached = load(checkpoint, cache)
    assert_same_model(cached, reference)
    with torch.no_grad():
        cached.W_U.mul_(2.0)
    again = load(checkpoint, cache)
    assert again.weight_cache.startswith("loaded from ")
    assert_same_model(again, reference)
    assert torch.equal(cached.W_U, 2.0 * reference.W_U) and not stored.W_E.any()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another key"])
def test_a_damaged_entry_is_removed_and_stored_again(tmp_path, damage, caplog):
    checkpoint = hf_tiny.save_as_directory(hf_tiny.neox(), tmp_path / "checkpoint")
    cache = tmp_path / "cache"
    load(checkpoint, cache)
    (entry,) = cache.glob("*.safetensors")
    data = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x07" * len(data))
    else:  # a well-formed entry of some other load (other code) under this load's name
        code = weight_cache.code_digest().encode()
        assert code in data[:65536]
        entry.write_bytes(data.replace(code, b"0" * len(code), 1))
    with caplog.at_level(logging.WARNING, logger="lens_core.weight_cache"):
        model = load(checkpoint, cache)
    assert model.weight_cache.startswith("stored in ")
    assert any("removed; loading from the checkpoint" in r.getMessage() for r in caplog.records)
    assert_same_model(model, load(checkpoint, False))
    assert load(checkpoint, cache).weight_cache.startswith("loaded from ")


def test_off_by_argument_or_environment(tmp_path, monkeypatch):
    checkpoint = hf_tiny.save_as_directory(hf_tiny.gpt2(), tmp_path / "checkpoint")
    monkeypatch.setenv(weight_cache.ENV_DIR, "off")
    assert load(checkpoint, None).weight_cache == "off"
    monkeypatch.setenv(weight_cache.ENV_DIR, str(tmp_path / "from-env"))
    assert load(checkpoint, False).weight_cache == "off"
    assert load(checkpoint, None).weight_cache.startswith(f"stored in {tmp_path / 'from-env'}")
    assert load(checkpoint, None).weight_cache.startswith(f"loaded from {tmp_path / 'from-env'}")


def test_a_directory_that_cannot_be_written_only_costs_the_entry(tmp_path, caplog):
    checkpoint = hf_tiny.save_as_directory(hf_tiny.gpt2(), tmp_path / "checkpoint")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        model = load(checkpoint, blocker / "cache")
    assert model.weight_cache.startswith("not stored: ")
    assert_same_model(model, load(checkpoint, False))


def test_the_bound_removes_the_least_recently_used_entries(tmp_path, monkeypatch):
    checkpoints = [hf_tiny.save_as_directory(hf_tiny.gpt2(seed=seed), tmp_path / f"c{seed}") for seed in range(3)]
    cache = tmp_path / "cache"
    load(checkpoints[0], cache)
    (entry,) = cache.glob("*.safetensors")
    size = entry.stat().st_size
    monkeypatch.setenv(weight_cache.ENV_MB, str(2.5 * size / 2**20))  # room for two entries
    load(checkpoints[1], cache)
    assert load(checkpoints[0], cache).weight_cache.startswith("loaded from ")  # now the most recent
    time.sleep(0.05)
    load(checkpoints[2], cache)  # a third: the least recently used (c1) goes
    assert len(list(cache.glob("*.safetensors"))) == 2
    assert load(checkpoints[0], cache).weight_cache.startswith("loaded from ")
    assert load(checkpoints[1], cache).weight_cache.startswith("stored in ")
    monkeypatch.setenv(weight_cache.ENV_MB, str(0.2 * size / 2**20))
    assert load(checkpoints[2], False).weight_cache == "off"
    over = load(checkpoints[2], tmp_path / "small")
    assert "over the cache's bound" in over.weight_cache and not list((tmp_path / "small").glob("*.safetensors"))


def test_threads_loading_one_checkpoint_at_once(tmp_path):
    checkpoint = hf_tiny.save_as_directory(hf_tiny.llama(), tmp_path / "checkpoint")
    cache = tmp_path / "cache"
    models: list[HookedTransformer] = []
    threads = [threading.Thread(target=lambda: models.append(HookedTransformer.from_pretrained(
        checkpoint, weight_cache=cache))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    weight_arena.wait()
    reference = load(checkpoint, False)
    for model in models + [load(checkpoint, cache)]:
        assert_same_model(model, reference)
    assert len(list(cache.glob("*.safetensors"))) == 1 and not list(cache.glob(".*.tmp"))


def test_a_sharded_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    hf_tiny.qwen2().save_pretrained(checkpoint, max_shard_size="40KB")
    assert len(list(checkpoint.glob("model-*.safetensors"))) > 1
    reference = load(checkpoint, False)
    assert_same_model(load(checkpoint, tmp_path / "cache"), reference)
    assert_same_model(load(checkpoint, tmp_path / "cache"), reference)
    os.utime(sorted(checkpoint.glob("model-*.safetensors"))[-1])  # one shard touched: a new entry
    assert load(checkpoint, tmp_path / "cache").weight_cache.startswith("stored in ")


def test_a_pickled_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    hf = hf_tiny.neox()
    hf.save_pretrained(checkpoint)
    (checkpoint / "model.safetensors").unlink()  # the same weights as an older checkpoint would hold them
    torch.save({name: t.contiguous() for name, t in hf.state_dict().items()}, checkpoint / "pytorch_model.bin")
    reference = load(checkpoint, False)
    assert_same_model(load(checkpoint, tmp_path / "cache"), reference)
    cached = load(checkpoint, tmp_path / "cache")
    assert cached.weight_cache.startswith("loaded from ")  # and no pickle read: the entry is safetensors
    assert_same_model(cached, reference)


def test_header_bytes_fill_gaps_and_refuse_overlaps():
    entries = [("b", torch.float32, [2], 64, 72), ("a", torch.uint8, [3], 0, 3)]
    head = header_bytes(entries, {"k": "v"}, 4096)
    assert len(head) == 4096 and int.from_bytes(head[:8], "little") == 4088
    header = json.loads(head[8:])
    assert header["a"]["data_offsets"] == [0, 3] and header["b"]["data_offsets"] == [64, 72]
    (padding,) = [v for k, v in header.items() if k.startswith(PADDING_PREFIX)]
    assert padding == {"dtype": "U8", "shape": [61], "data_offsets": [3, 64]}
    with pytest.raises(SafetensorsError, match="overlaps"):
        header_bytes([("a", torch.uint8, [8], 0, 8), ("b", torch.uint8, [8], 4, 12)], {}, 4096)
    with pytest.raises(SafetensorsError, match="set aside"):
        header_bytes(entries, {"k": "v" * 5000}, 4096)
