"""Blobs round-trip exactly, reject any damage, and never touch pickle."""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import pkgutil
import typing
import warnings

import pytest
import torch

import lens_core.results
from cache_store.codec import (
    HEADER_SIZE,
    CorruptEntry,
    decode_activations,
    decode_parts,
    decode_result,
    encode_activations,
    encode_parts,
    encode_result,
)
from cache_store_testkit import MixedResult, assert_same, mixed_result


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch):
    """Any unpickling during these tests is a failure."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


def test_mixed_result_round_trips_exactly():
    original = mixed_result()
    restored = decode_result(encode_result(original))
    assert isinstance(restored, MixedResult)
    assert_same(restored, original)


def test_shared_storage_tensors_round_trip():
    base = torch.randn(4, 6)
    activations = {"q": base[:, :3], "k": base[:, 3:], "all": base, "again": base}
    restored = decode_activations(encode_activations(activations))
    assert list(restored) == list(activations)
    for name, tensor in activations.items():
        assert_same(restored[name], tensor.contiguous(), name)


def _sample(annotation, depth=0):
    """A value for a field annotation, for result classes written by others."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is torch.Tensor:
        return torch.randn(2, 3)
    if annotation in (str, int, float, bool):
        return {str: "label", int: 3, float: 0.25, bool: True}[annotation]
    if annotation is type(None):
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _sample(next(a for a in args if a is not type(None)), depth)
    if origin is list or annotation is list:
        return [_sample(args[0], depth + 1) if args else "x" for _ in range(2)]
    if origin is dict or annotation is dict:
        return {"k": _sample(args[1], depth + 1) if args else 1}
    if annotation is typing.Any:
        return {"any": [1, "two", None]}
    raise NotImplementedError(f"no sample for {annotation!r}")


def _registered_kinds():
    """Import every experiment module that exists, so its result classes are registered."""
    try:
        package = importlib.import_module("lens_core.experiments")
    except ModuleNotFoundError as missing:
        if missing.name not in ("lens_core", "lens_core.experiments"):
            raise
        package = None
    for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
        try:
            importlib.import_module(f"lens_core.experiments.{info.name}")
        except Exception as error:  # a broken module is its own tests' failure, not this one's
            warnings.warn(f"lens_core.experiments.{info.name} did not import: {error!r}")
    return sorted(lens_core.results.RESULT_TYPES)


@pytest.mark.parametrize("kind", _registered_kinds())
def test_every_registered_result_type_round_trips(kind):
    cls = lens_core.results.RESULT_TYPES[kind]
    hints = typing.get_type_hints(cls)
    try:
        values = {f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls)}
    except NotImplementedError as why:
        pytest.skip(f"{cls.__name__}: {why}")
    original = cls(**values)
    restored = decode_result(encode_result(original))
    assert type(restored) is cls
    assert_same(restored, original)


def test_activations_round_trip_at_full_precision():
    activations = {"blocks.0.hook_resid_pre": torch.randn(1, 5, 8), "blocks.0.attn.hook_pattern": torch.rand(1, 2, 5, 5)}
    restored = decode_activations(encode_activations(activations))
    for name in activations:
        assert_same(restored[name], activations[name], name)


def test_fp16_activations_halve_size_and_keep_fp16_precision():
    activations = {"resid": torch.randn(1, 64, 256) * 10, "ids": torch.arange(10)}
    full = encode_activations(activations)
    half = encode_activations(activations, fp16=True)
    assert len(half) < 0.55 * len(full)
    restored = decode_activations(half)
    assert restored["resid"].dtype == torch.float32
    expected = activations["resid"].to(torch.float16).to(torch.float32)  # independent rounding
    assert torch.equal(restored["resid"], expected)
    assert_same(restored["ids"], activations["ids"])


def test_fp16_keeps_tensors_that_would_overflow_at_full_precision():
    big = torch.tensor([1.0, 1e6, -float("inf")])
    restored = decode_activations(encode_activations({"big": big}, fp16=True))
    assert_same(restored["big"], big)


def test_every_single_byte_flip_is_detected():
    blob = encode_result(mixed_result())
    # Every position would be slow to cover with full decodes; stride through header, meta and tensors.
    positions = list(range(0, HEADER_SIZE)) + list(range(HEADER_SIZE, len(blob), max(1, len(blob) // 200)))
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 0x01
        with pytest.raises(CorruptEntry):
            decode_result(bytes(damaged))


@pytest.mark.parametrize("keep", [0, 3, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10, -1])
def test_truncated_blob_is_detected(keep):
    blob = encode_result(mixed_result())
    with pytest.raises(CorruptEntry):
        decode_result(blob[:keep])


def test_padded_blob_is_detected():
    with pytest.raises(CorruptEntry):
        decode_result(encode_result(mixed_result()) + b"\0")


def test_activation_blob_is_not_a_result_and_vice_versa():
    with pytest.raises(CorruptEntry):
        decode_result(encode_activations({"x": torch.zeros(2)}))
    with pytest.raises(CorruptEntry):
        decode_activations(encode_result(mixed_result()))


def test_result_whose_class_changed_is_corrupt_not_a_crash():
    tensors, meta = mixed_result().to_parts()
    meta["fields"]["removed_field"] = 1
    blob = encode_parts(tensors, {"container": "result", "result": meta})
    with pytest.raises(CorruptEntry):
        decode_result(blob)


def test_blob_is_not_a_pickle():
    blob = encode_result(mixed_result())
    assert blob[:4] == b"CXRS"
    assert not blob.startswith(b"\x80")  # pickle protocol 2+ opcode
    tensors, meta = decode_parts(blob)
    assert meta["container"] == "result"


@pytest.mark.parametrize("shift", [0, 1, 3, 8])
def test_tensor_reader_agrees_with_safetensors_at_any_alignment(shift):
    import safetensors.torch

    from cache_store.codec import _read_safetensors

    tensors = {
        "f32": torch.randn(3, 5),
        "f64": torch.randn(7, dtype=torch.float64),
        "bf16": torch.randn(2, 2).to(torch.bfloat16),
        "i64": torch.arange(-3, 6),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(1.5),
    }
    data = safetensors.torch.save(tensors)
    ours = _read_safetensors(bytearray(b"\0" * shift + data), shift)
    theirs = safetensors.torch.load(data)
    assert set(ours) == set(theirs) == set(tensors)
    for name in tensors:
        assert_same(ours[name], theirs[name], name)


def test_decoded_tensors_do_not_alias_the_callers_bytes():
    blob = encode_activations({"x": torch.zeros(16)})
    restored = decode_activations(blob)
    restored["x"] += 1  # writable, and the stored blob is untouched
    assert torch.equal(decode_activations(blob)["x"], torch.zeros(16))
