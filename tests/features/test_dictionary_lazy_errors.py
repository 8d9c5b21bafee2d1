"""Dictionaries by Hub name (client stubbed), memory-mapped loading, the pool's memory budget, and clear errors
for misfits and bad files (nothing half-loaded stays in the pool)."""

from __future__ import annotations

import shutil

import huggingface_hub
import pytest
import torch
import yaml
from dictionary_writers import write_ct_clt, write_ct_set, write_gemma_scope_npz
from features_support import default_model
from safetensors.torch import save_file

from lens_core.features import CrossLayerTranscoder, FeaturesUnavailable, TranscoderSet, load_dictionary
from lens_core.features.mmap_io import file_backed
from lens_core.pool import MemoryBudgetError, ModelPool


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub: repositories are folders under tmp_path/hub; the client's two download calls are recorded."""
    root = tmp_path / "hub"
    calls = []

    def hf_hub_download(repo_id, filename, revision=None, **_):
        calls.append(("file", repo_id, filename, revision))
        path = root / repo_id / filename
        if not path.is_file():
            raise FileNotFoundError(f"404 {repo_id}/{filename}")
        return str(path)

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **_):
        calls.append(("snapshot", repo_id, tuple(allow_patterns or ()), revision))
        if not (root / repo_id).is_dir():
            raise FileNotFoundError(f"404 {repo_id}")
        return str(root / repo_id)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return root, calls


def test_hub_names_for_each_layout(hub):
    root, calls = hub
    write_ct_set(root / "org" / "plt" / "sub")
    tset = load_dictionary("org/plt/sub@v1", model=default_model())
    assert isinstance(tset, TranscoderSet) and len(tset) == 3
    assert ("file", "org/plt", "sub/config.yaml", "v1") in calls
    assert ("snapshot", "org/plt", ("sub/layer_*.safetensors",), "v1") in calls

    write_ct_clt(root / "org" / "clt")
    assert isinstance(load_dictionary("org/clt", model=default_model()), CrossLayerTranscoder)
    assert ("snapshot", "org/clt", ("*.safetensors",), None) in calls

    write_gemma_scope_npz(root / "google" / "gs" / "layer_1" / "width_16k" / "average_l0_9" / "params.npz")
    tc = load_dictionary("google/gs/layer_1/width_16k/average_l0_9/params.npz")
    assert tc.cfg.layer == 1

    # a config listing hf:// files in another repository
    write_ct_set(root / "org" / "files", listed=True)
    (root / "org" / "lister").mkdir(parents=True)
    (root / "org" / "lister" / "config.yaml").write_text(yaml.safe_dump({
        "model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out",
        "transcoders": [f"hf://org/files/tc_{i}.safetensors?revision=r2" for i in range(3)]}))
    assert load_dictionary("org/lister").layers == [0, 1, 2]
    assert ("file", "org/files", "tc_2.safetensors", "r2") in calls

    with pytest.raises(FeaturesUnavailable, match="could not fetch config.yaml from the Hub repository 'org/absent'"):
        load_dictionary("org/absent")


def test_safetensors_dictionaries_are_memory_mapped(tmp_path):
    write_ct_set(tmp_path / "set", d_sae=4096, n_layers=3)
    write_ct_clt(tmp_path / "clt", d_sae=512)
    model = default_model()
    tset = load_dictionary(tmp_path / "set", model=model)
    for i, tc in enumerate(tset):
        for name in ("W_enc", "W_dec", "b_enc"):
            assert file_backed(getattr(tc, name), tmp_path / "set" / f"layer_{i}.safetensors") is True, name
    eager = load_dictionary(tmp_path / "set", lazy=False)
    assert file_backed(eager[0].W_enc, tmp_path / "set" / "layer_0.safetensors") is False
    x = torch.randn(4, 128)
    torch.testing.assert_close(tset[1](x), eager[1](x), rtol=0, atol=0)
    clt = load_dictionary(tmp_path / "clt", model=model)
    assert file_backed(clt.W_dec[1], tmp_path / "clt" / "W_dec_1.safetensors") is True
    assert file_backed(clt.W_enc[2], tmp_path / "clt" / "W_enc_2.safetensors") is True


def test_pool_budget_counts_dictionaries(tmp_path):
    write_ct_set(tmp_path / "a", d_sae=1024)
    write_ct_set(tmp_path / "b", d_sae=1024, seed=1)
    one = 3 * (2 * 1024 * 128 + 2 * 1024 + 2 * 128) * 4  # 3 layers: W_enc, W_dec, b_enc, threshold, b_dec, b_in (float32)
    models = {"m": torch.nn.Linear(256, 256)}  # 263 KiB
    pool = ModelPool(max_bytes=int(1.5 * one) + 300_000, loader=lambda name, dtype, device: models[name])
    pool.get("m")
    base = pool.used_bytes()
    assert base == (256 * 256 + 256) * 4
    pool.get_dictionary("a", lambda: load_dictionary(tmp_path / "a", model=default_model()))
    assert pool.used_bytes() == base + one
    pool.get_dictionary("b", lambda: load_dictionary(tmp_path / "b"))  # over budget: the least recently used go
    keys = pool.loaded_keys()
    assert keys == [("dictionary", "b", "")] or keys == [pool.key("m"), ("dictionary", "b", "")]
    assert ("dictionary", "a", "") not in keys and pool.used_bytes() <= pool.max_bytes
    small = ModelPool(max_bytes=one // 2)
    with pytest.raises(MemoryBudgetError, match="needs 3.0 MiB, more than the server's whole memory budget"):
        small.get_dictionary("a", lambda: load_dictionary(tmp_path / "a"))
    assert small.loaded_keys() == [] and small.used_bytes() == 0


def test_misfits_name_the_file_and_the_mismatch(tmp_path):
    model = default_model()
    write_ct_set(tmp_path / "narrow", d_model=64)
    with pytest.raises(FeaturesUnavailable, match=r"narrow/layer_0.safetensors: layer 0: d_in is 64 but "
                                                  r"'blocks.0.ln2.hook_normalized' in this model has width 128"):
        load_dictionary(tmp_path / "narrow", model=model)
    write_ct_set(tmp_path / "deep", n_layers=5)
    with pytest.raises(FeaturesUnavailable, match=r"deep/config.yaml: the dictionary has transcoders for layers "
                                                  r"\[0, 1, 2, 3, 4\], the model has 3 layers"):
        load_dictionary(tmp_path / "deep", model=model)
    write_ct_set(tmp_path / "hook", config_extra={"feature_input_hook": "hook_nowhere"})
    with pytest.raises(FeaturesUnavailable, match=r"hook/layer_0.safetensors: the model has no hook point 'blocks.0.hook_nowhere'"):
        load_dictionary(tmp_path / "hook", model=model)
    write_ct_clt(tmp_path / "clt4", n_layers=4)
    with pytest.raises(FeaturesUnavailable, match=r"clt4: the cross-layer transcoder has 4 layers, the model has 3"):
        load_dictionary(tmp_path / "clt4", model=model)


def test_unknown_missing_and_corrupt_files(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "weights.bin").write_bytes(b"x")
    with pytest.raises(FeaturesUnavailable, match=r"unknown dictionary format in .*odd: .*it holds \['weights.bin'\]"):
        load_dictionary(tmp_path / "odd")
    (tmp_path / "odd" / "config.yaml").write_text("model_kind: mystery\n")
    with pytest.raises(FeaturesUnavailable, match="config.yaml: unknown model_kind 'mystery'"):
        load_dictionary(tmp_path / "odd")
    (tmp_path / "odd" / "config.yaml").write_text("model_kind: [unclosed\n")
    with pytest.raises(FeaturesUnavailable, match="cannot read .*odd/config.yaml"):
        load_dictionary(tmp_path / "odd")
    write_ct_set(tmp_path / "set")
    (tmp_path / "set" / "layer_1.safetensors").unlink()
    with pytest.raises(FeaturesUnavailable, match=r"set: layer_\{i\}.safetensors files are missing for layer\(s\) \[1\]"):
        load_dictionary(tmp_path / "set")
    write_ct_set(tmp_path / "listed", listed=True)
    (tmp_path / "listed" / "tc_2.safetensors").unlink()
    with pytest.raises(FeaturesUnavailable, match=r"missing dictionary file .*listed/tc_2.safetensors"):
        load_dictionary(tmp_path / "listed")
    write_ct_set(tmp_path / "bad")
    path = tmp_path / "bad" / "layer_2.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(FeaturesUnavailable, match=r"cannot read .*bad/layer_2.safetensors \(corrupt or truncated\?\)") as exc:
        load_dictionary(tmp_path / "bad")
    assert str(exc.value).count("layer_2.safetensors") == 1, exc.value  # the file named once
    save_file({"W_enc": torch.zeros(8, 128)}, str(path))
    with pytest.raises(FeaturesUnavailable, match=r"layer_2.safetensors: not a circuit-tracer transcoder file, it lacks "
                                                  r"\['W_dec', 'b_enc', 'b_dec'\]"):
        load_dictionary(tmp_path / "bad")
    write_ct_clt(tmp_path / "clt")
    (tmp_path / "clt" / "W_dec_1.safetensors").unlink()
    with pytest.raises(FeaturesUnavailable, match=r"missing dictionary file .*clt/W_dec_1.safetensors"):
        load_dictionary(tmp_path / "clt")
    npz = tmp_path / "gs" / "params.npz"
    write_gemma_scope_npz(npz)
    npz.write_bytes(npz.read_bytes()[:200])
    with pytest.raises(FeaturesUnavailable, match=r"cannot read .*gs/params.npz \(corrupt or truncated\?\)"):
        load_dictionary(npz, layer=0)
    with pytest.raises(FeaturesUnavailable, match="no dictionary at"):
        load_dictionary(str(tmp_path / "nowhere"))


def test_failed_loads_leave_nothing_in_the_pool(tmp_path):
    write_ct_set(tmp_path / "narrow", d_model=64)
    write_ct_set(tmp_path / "good")
    pool = ModelPool()
    with pytest.raises(FeaturesUnavailable, match="d_in is 64"):
        pool.get_dictionary("narrow", lambda: load_dictionary(tmp_path / "narrow", model=default_model()))
    assert pool.loaded_keys() == [] and pool.used_bytes() == 0
    shutil.copytree(tmp_path / "good", tmp_path / "narrow", dirs_exist_ok=True)  # fixed on disk: the next ask retries
    assert pool.get_dictionary("narrow", lambda: load_dictionary(tmp_path / "narrow", model=default_model())).layers == [0, 1, 2]
    assert pool.loaded_keys() == [("dictionary", "narrow", "")] and pool.used_bytes() > 0
