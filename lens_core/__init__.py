"""Circuit Explorer's library: hooked transformers with TransformerLens's names, and experiments on them."""

from .cache import ActivationCache
from .config import HookedTransformerConfig
from .hooks import HookPoint
from .loading import ModelLoadError
from .model import HookedTransformer
from .tokens import PromptTooLongError
from .utils import get_act_name

__all__ = ["ActivationCache", "HookedTransformer", "HookedTransformerConfig", "HookPoint", "ModelLoadError", "PromptTooLongError",
           "get_act_name"]
