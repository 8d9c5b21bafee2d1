"""stop_at_layer / start_at_layer split a forward pass bit for bit (torch.equal), on the plain and the
hooked path alike. The two paths differ from each other by float rounding (~1e-6): with no hook reading
the pattern, attention runs PyTorch's fused kernel; reading it (or hook_result) needs the explicit
softmax(QK^T)V. Each path is compared with itself here; tests/lens_core/test_core_hooks.py compares them."""

from __future__ import annotations

import pytest
import torch

import hf_tiny
from lens_core import HookedTransformer


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_split_forward_is_bit_equal_on_each_path(family):
    model = HookedTransformer.from_hf_model(hf_tiny.FAMILIES[family]())
    tokens = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    # plain path: nothing hooked
    full = model(tokens)
    resid = model(tokens, stop_at_layer=1)
    assert torch.equal(model(resid, start_at_layer=1), full)
    # a hook on the residual alone keeps the fused path: the same bits as the unhooked run
    _, resid_cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    assert torch.equal(resid_cache["blocks.1.hook_resid_pre"], resid)
    # hooked path (everything cached, patterns included): the split runs equal the full hooked run
    logits, cache = model.run_with_cache(tokens)
    stopped, stop_cache = model.run_with_cache(tokens, stop_at_layer=1)
    assert torch.equal(stopped, cache["resid_pre", 1]) and torch.equal(stop_cache["pattern", 0], cache["pattern", 0])
    resumed, resume_cache = model.run_with_cache(stopped, start_at_layer=1)
    assert torch.equal(resumed, logits) and torch.equal(resume_cache["pattern", 1], cache["pattern", 1])
    # and the two paths agree to float rounding
    assert torch.allclose(logits, full, atol=1e-5) and not torch.equal(cache["resid_pre", 1], cache["resid_pre", 0])
