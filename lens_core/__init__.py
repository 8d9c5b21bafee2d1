"""Circuit Explorer's library: hooked transformers with TransformerLens's names, and experiments on them."""

import os

# PyTorch's CPU allocator asks for transparent huge pages for large tensors when this is set
# (read at its first large allocation, so it must come before torch does any work). Loading
# writes every weight once into fresh memory; with 2 MB pages that costs half the page faults'
# time (GPT-2 small: ~240 ms -> ~165 ms). A value the user set is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .cache import ActivationCache
from .config import HookedTransformerConfig
from .hooks import HookPoint
from .loading import ModelLoadError
from .model import HookedTransformer
from .utils import get_act_name

__all__ = ["ActivationCache", "HookedTransformer", "HookedTransformerConfig", "HookPoint", "ModelLoadError", "get_act_name"]
