"""A dictionary reading the MLP's input after its pre-norm (circuit-tracer's ``mlp.hook_in``, the default) on OLMo 2,
which has no norm before its MLP: the refusal names the hook its MLP does read, and a dictionary naming that hook
(``feature_input_hook: hook_resid_mid``) loads and fits."""

from __future__ import annotations

import pytest
from dictionary_writers import write_ct_clt, write_ct_set
from hf_tiny import save_as_directory
from hf_tiny_families import olmo2

from lens_core import HookedTransformer
from lens_core.features import FeaturesUnavailable, load_dictionary


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = save_as_directory(olmo2(seed=4), tmp_path_factory.mktemp("olmo2"))
    return HookedTransformer.from_pretrained(directory, dtype="float32", device="cpu")


def test_the_refusal_names_the_mlp_input_of_a_model_without_a_pre_norm(model, tmp_path):
    write_ct_set(tmp_path / "set", n_layers=2, d_model=32, d_sae=8)
    write_ct_clt(tmp_path / "clt", n_layers=2, d_model=32, d_sae=8)
    for name in ("set", "clt"):
        with pytest.raises(FeaturesUnavailable, match=r"no hook point 'blocks\.0\.ln2\.hook_normalized'.*"
                                                      r"'blocks\.0\.hook_resid_mid'.*feature_input_hook: hook_resid_mid"):
            load_dictionary(tmp_path / name, model)


def test_the_advised_hook_loads(model, tmp_path):
    write_ct_set(tmp_path / "set", n_layers=2, d_model=32, d_sae=8, config_extra={"feature_input_hook": "hook_resid_mid"})
    tset = load_dictionary(tmp_path / "set", model)
    assert [tc.cfg.hook_in for tc in tset] == ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_mid"]
