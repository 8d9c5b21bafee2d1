"""Keys come from content: equal content gives equal keys, any changed part changes the key."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from cache_store import keys
from cache_store.keys import canonical, make_key, model_fingerprint
from cache_store_testkit import HashedModel, TinyModel


@dataclasses.dataclass
class Request:
    layer: int
    pos: slice | None = None
    scale: float = 1.0


@dataclasses.dataclass
class OtherRequest:  # same fields as Request, different meaning
    layer: int
    pos: slice | None = None
    scale: float = 1.0


BASE_TOKENS = [50256, 464, 3139, 286]


def base_params():
    return {
        "layer": 3,
        "scale": 0.5,
        "flag": True,
        "name": "resid_pre",
        "missing": None,
        "heads": [0, 2, 5],
        "nested": {"a": [1, {"b": 2.0}]},
        "by_layer": {1: "x", 2: "y"},
        "direction": torch.arange(6, dtype=torch.float32),
        "request": Request(layer=2, pos=slice(None, -1)),
        "dtype": torch.float32,
    }


def key_for(model=None, tokens=None, experiment="logit_lens", params=None, kind="result"):
    model = model if model is not None else TinyModel(processing={"fold_ln": True})
    tokens = tokens if tokens is not None else BASE_TOKENS
    params = params if params is not None else base_params()
    return make_key(kind, model_fingerprint(model), tokens, experiment, params)


def test_key_is_a_sha256_hex_digest():
    key = key_for()
    assert len(key) == 64 and int(key, 16) >= 0


def test_equal_content_in_distinct_objects_gives_the_same_key():
    # Fresh model, token and parameter objects with the same content: same key.
    assert key_for() == key_for()
    reordered = dict(reversed(list(base_params().items())))
    assert key_for(params=reordered) == key_for()


def test_token_ids_not_their_container_decide():
    as_list = key_for(tokens=BASE_TOKENS)
    assert key_for(tokens=torch.tensor(BASE_TOKENS, dtype=torch.int32)) == as_list
    assert key_for(tokens=torch.tensor(BASE_TOKENS, dtype=torch.int64)) == as_list
    assert key_for(tokens=[BASE_TOKENS]) != as_list  # a batch of one is a different shape


def _changed(params_update=None, **key_args):
    params = base_params()
    if params_update:
        params_update(params)
    return key_for(params=params, **key_args)


def _set(name, value):
    return lambda p: p.__setitem__(name, value)


def _tensor_edit(p):
    p["direction"] = p["direction"].clone()
    p["direction"][4] += 1e-6


CHANGES = {
    # model fingerprint
    "model name": lambda: key_for(model=TinyModel(name="other", processing={"fold_ln": True})),
    "model dtype": lambda: key_for(model=TinyModel(dtype=torch.bfloat16, processing={"fold_ln": True})),
    "processing flag": lambda: key_for(model=TinyModel(processing={"fold_ln": False})),
    "processing absent": lambda: key_for(model=TinyModel()),
    "weights": lambda: key_for(model=TinyModel(seed=1, processing={"fold_ln": True})),
    # tokens, experiment, kind
    "one token id": lambda: key_for(tokens=[50256, 464, 3139, 287]),
    "token order": lambda: key_for(tokens=list(reversed(BASE_TOKENS))),
    "experiment name": lambda: key_for(experiment="dla"),
    "entry kind": lambda: key_for(kind="activations"),
    # parameters, one kind at a time
    "int": lambda: _changed(_set("layer", 4)),
    "int vs float": lambda: _changed(_set("layer", 3.0)),
    "float last digit": lambda: _changed(_set("scale", 0.5000000000000001)),
    "bool vs int": lambda: _changed(_set("flag", 1)),
    "str": lambda: _changed(_set("name", "resid_mid")),
    "None vs 0": lambda: _changed(_set("missing", 0)),
    "list order": lambda: _changed(_set("heads", [0, 5, 2])),
    "list element": lambda: _changed(_set("heads", [0, 2, 6])),
    "nested dict value": lambda: _changed(_set("nested", {"a": [1, {"b": 2.5}]})),
    "int dict keys vs str keys": lambda: _changed(_set("by_layer", {"1": "x", "2": "y"})),
    "tensor value": lambda: _changed(_tensor_edit),
    "tensor dtype": lambda: _changed(_set("direction", torch.arange(6, dtype=torch.float64))),
    "tensor shape": lambda: _changed(_set("direction", torch.arange(6, dtype=torch.float32).reshape(2, 3))),
    "dataclass field": lambda: _changed(_set("request", Request(layer=2, pos=slice(None, -1), scale=2.0))),
    "dataclass slice": lambda: _changed(_set("request", Request(layer=2, pos=slice(0, -1)))),
    "dataclass type": lambda: _changed(_set("request", OtherRequest(layer=2, pos=slice(None, -1)))),
    "torch dtype": lambda: _changed(_set("dtype", torch.float16)),
    "extra parameter": lambda: _changed(_set("new", 0)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changing_any_key_part_changes_the_key(change):
    assert CHANGES[change]() != key_for()


def test_all_changes_give_distinct_keys():
    produced = [make() for make in CHANGES.values()]
    assert len(set(produced)) == len(produced)


def test_format_version_is_part_of_the_key(monkeypatch):
    before = key_for()
    monkeypatch.setattr(keys, "FORMAT_VERSION", keys.FORMAT_VERSION + 1)
    assert key_for() != before


def test_floats_are_keyed_by_exact_repr():
    assert canonical(0.1 + 0.2) != canonical(0.3)
    assert canonical(float("1e-300")) != canonical(0.0)
    assert canonical(-0.0) != canonical(0.0)


def test_tensor_key_uses_bytes_not_identity():
    a = torch.randn(4, 3)
    assert canonical(a) == canonical(a.clone())
    assert canonical(a.t()) == canonical(a.t().contiguous())
    assert canonical(a)["__tensor__"]["sha256"] == hashlib.sha256(a.numpy().tobytes()).hexdigest()


def test_unknown_parameter_types_are_refused():
    with pytest.raises(TypeError):
        canonical({"fn": object()})
    with pytest.raises(TypeError):
        canonical(lambda x: x)


def test_weights_hash_fallback_is_memoised_and_content_based():
    model = TinyModel()
    first = model_fingerprint(model)["weights"]
    second = model_fingerprint(model)["weights"]
    assert first == second and model.state_dict_calls == 1
    assert model_fingerprint(TinyModel())["weights"] == first  # same weights, another object
    assert model_fingerprint(TinyModel(seed=3))["weights"] != first


def test_model_supplied_weights_hash_is_used():
    model = HashedModel("abc123")
    a = model_fingerprint(model)
    b = model_fingerprint(HashedModel("abc124"))
    assert a["weights"] == "abc123" and b["weights"] == "abc124"
    assert model.state_dict_calls == 0
