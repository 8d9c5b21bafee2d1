"""The same weights in lens_core and in transformer-lens 4.3.0 (its TransformerBridge in compatibility
mode, which folds and centres weights as our loader does), and a tolerance check."""

from __future__ import annotations

import functools
import tempfile

import torch

import hf_tiny
from lens_core import HookedTransformer
from lens_core.loading import DEFAULT_MODEL_DIR

# The names the bridge knows each family by (its adapter lookup); the weights are ours.
BRIDGE_NAMES = {"gpt2": "gpt2", "neox": "EleutherAI/pythia-14m", "llama": "meta-llama/Llama-3.2-1B", "qwen2": "Qwen/Qwen2-0.5B"}
MODELS = ["bundled", *sorted(hf_tiny.FAMILIES)]


def boot(name, hf, tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tokenizer, device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge


def saved_tiny_tokenizer():
    """The tiny word-level tokenizer, saved and reloaded (the bridge reads its init kwargs)."""
    from transformers import AutoTokenizer

    folder = tempfile.mkdtemp(prefix="tl-compat-tok-")
    hf_tiny.tiny_tokenizer().save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@functools.lru_cache(maxsize=None)
def pair(which: str):
    """(ours, bridge, tokens [2, pos]) for the bundled model or a tiny random model of one family.
    The bridge rewrites the HF model it wraps, so each side gets its own copy of the same weights."""
    if which == "bundled":
        from transformers import AutoTokenizer, GPT2LMHeadModel

        ours = HookedTransformer.from_pretrained("default")
        hf = GPT2LMHeadModel.from_pretrained(DEFAULT_MODEL_DIR).eval()
        bridge = boot("gpt2", hf, AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR))
        tokens = ours.to_tokens(["The cat sat on the mat and the dog", "def add(a, b): return a + b"])
        return ours, bridge, tokens
    tokenizer = saved_tiny_tokenizer()
    ours = HookedTransformer.from_hf_model(hf_tiny.FAMILIES[which](), tokenizer=tokenizer)
    bridge = boot(BRIDGE_NAMES[which], hf_tiny.FAMILIES[which](), tokenizer)
    tokens = torch.randint(1, 20, (2, 9), generator=torch.Generator().manual_seed(3))
    return ours, bridge, tokens


def assert_same(ours, theirs, rel=1e-5):
    """Same shape, and equal within ``rel`` of the reference's largest magnitude (at least 1)."""
    theirs = torch.as_tensor(theirs).detach().float().cpu()
    ours = torch.as_tensor(ours).detach().float().cpu()
    assert tuple(ours.shape) == tuple(theirs.shape), (tuple(ours.shape), tuple(theirs.shape))
    if theirs.numel() == 0:
        return
    scale = max(theirs.abs().max().item(), 1.0)
    diff = (ours - theirs).abs().max().item()
    assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel} x {scale:.3g}"
