"""TransformerLens's from_pretrained options and cfg fields on lens_core (no transformer-lens needed)."""

import torch

import hf_tiny
from lens_core import HookedTransformer


def test_from_pretrained_options():
    model = HookedTransformer.from_pretrained("default", default_prepend_bos=False)
    assert model.cfg.default_prepend_bos is False
    assert model.to_tokens("def f")[0, 0] != model.tokenizer.bos_token_id
    assert HookedTransformer.from_pretrained("default").to_tokens("def f")[0, 0] == 0
    hf = hf_tiny.gpt2()
    via_name = HookedTransformer.from_pretrained("tiny", hf_model=hf, fold_ln=False)
    direct = HookedTransformer.from_hf_model(hf, fold_ln=False)
    tokens = torch.arange(1, 9)[None]
    assert torch.equal(via_name(tokens), direct(tokens))
    assert via_name.cfg.model_name == "tiny" and not via_name.processing.get("fold_ln", True)
    for name in ("attn_only", "use_attn_result", "seed", "init_weights", "d_vocab_out", "default_prepend_bos"):
        assert hasattr(model.cfg, name)
    assert model.cfg.init_weights is False  # loaded weights are never re-initialised
