"""Every experiment gives the same numbers, bit for bit, as the saved run (see ``golden_cases``).

The outputs were saved before the experiments moved into subpackages; a move, a refactor or a
speed-up that changes a single bit of any result fails here. On a CPU with another vector unit than
the recording machine's, float reductions may round differently: there the check is 1e-6 relative.
"""

from __future__ import annotations

import json

import pytest
import torch

from lens_core import HookedTransformer
from tests.experiments import golden_cases


@pytest.fixture(scope="module")
def outputs():
    model = HookedTransformer.from_pretrained("default")
    return golden_cases.flatten(golden_cases.run_all(model))


def test_every_registry_experiment_has_a_case():
    from lens_core.experiments import REGISTRY, REQUEST_TYPES

    kinds = {cls: name for name, cls in REQUEST_TYPES.items()}
    covered = {kinds[type(r)] for r in golden_cases.requests().values()}
    assert covered == set(REGISTRY)


def test_outputs_equal_the_saved_run(outputs):
    tensors, meta = outputs
    saved_tensors, saved = golden_cases.load()
    assert sorted(tensors) == sorted(saved_tensors)
    same_machine = saved["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for name, value in tensors.items():
        ref = saved_tensors[name]
        assert value.dtype == ref.dtype and value.shape == ref.shape, name
        if value.is_floating_point():
            assert torch.equal(value.isnan(), ref.isnan()), f"{name}: NaNs moved"
            value, ref = value.nan_to_num(0.0), ref.nan_to_num(0.0)
        if same_machine:
            assert torch.equal(value, ref), f"{name}: max difference {(value.double() - ref.double()).abs().max()}"
        else:
            torch.testing.assert_close(value, ref, rtol=1e-6, atol=1e-7, msg=name)
    assert _untimed(json.loads(json.dumps(meta, sort_keys=True, default=str))) == _untimed(saved["results"])


def _untimed(value):
    """The metadata without wall-clock fields (``seconds``), which differ run to run by nature."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value
