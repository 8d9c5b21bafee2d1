"""HookedTransformer: one transformer implementation with a named hook on every activation."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .compat import TransformerLensMixin
from .components import Embed, Norm, PosEmbed, TransformerBlock, Unembed
from .config import HookedTransformerConfig
from .hooks import HookFn, HookPoint, NameFilter, active_hooks, grad_hook, resolve_names
from .padding import check_padding_side, mask_for
from . import shortformer
from .tokens import TokenizerMixin

FwdHooks = list[tuple[Union[str, Callable[[str], bool]], HookFn]]


class HookedTransformer(TransformerLensMixin, TokenizerMixin, nn.Module):
    """A GPT-2, GPT-NeoX or Llama-family model with TransformerLens's hook names and weight names.

    Build one with :meth:`from_pretrained` or :meth:`from_hf_model` (see ``lens_core.loading``), or
    ``HookedTransformer(cfg)`` for a model with TransformerLens's initialisation (``cfg.init_weights``).
    """

    def __init__(self, cfg: HookedTransformerConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.processing: dict[str, bool] = {}
        self.processing_skipped: dict[str, str] = {}  # step -> why it was not (fully) applied to this model
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint("hook_embed")  # [batch, pos, d_model]
        if cfg.positional_embedding_type in ("standard", "shortformer"):
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint("hook_pos_embed")  # [batch, pos, d_model]
        self.blocks = nn.ModuleList(TransformerBlock(cfg, layer) for layer in range(cfg.n_layers))
        if cfg.positional_embedding_type == "shortformer":  # positions join each layer's queries and keys
            for block in self.blocks:
                object.__setattr__(block.attn, "shortformer_pos", self.pos_embed)
        self.ln_final = Norm(cfg, "ln_final")
        self.unembed = Unembed(cfg)
        self.unembed.hook_in = HookPoint("unembed.hook_in")  # [batch, pos, d_model], the final norm's output
        self.hook_dict: dict[str, HookPoint] = self._collect_hook_points()
        self._weights_hash: Optional[str] = None
        if cfg.init_weights:
            self.init_weights()
        self.eval()

    def _collect_hook_points(self) -> dict[str, HookPoint]:
        points: dict[str, HookPoint] = {}
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, HookPoint):
                    points[value.name] = value
        return dict(sorted(points.items(), key=lambda item: _hook_order(item[0])))

    # ----------------------------------------------------------------- running
    def forward(self, input: Union[str, list[str], torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Run the model (see :meth:`_forward` for the arguments)."""
        if self.cfg.positional_embedding_type != "shortformer":
            return self._forward(input, *args, **kwargs)
        token = shortformer.CURRENT.set(None)  # this call's hooked positions, for its layers only
        try:
            return self._forward(input, *args, **kwargs)
        finally:
            shortformer.CURRENT.reset(token)

    def _forward(
        self,
        input: Union[str, list[str], torch.Tensor],
        return_type: Optional[str] = "logits",
        loss_per_token: bool = False,
        prepend_bos: Optional[bool] = None,
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
        attention_mask: Optional[torch.Tensor] = None,
        tokens: Optional[torch.Tensor] = None,
        padding_side: Optional[str] = None,
    ) -> Any:
        """Run the model.

        ``input`` is text or token ids [batch, pos], or with ``start_at_layer=l`` the residual
        stream [batch, pos, d_model] entering block l (pass ``tokens=`` too if you want a loss).
        With ``stop_at_layer=l`` the residual stream entering block l is returned.
        ``return_type``: "logits", "loss", "both" (logits, loss) or None.

        Batches of different lengths (``lens_core.padding``): ``padding_side`` pads a list of prompts
        on that side (default: the tokenizer's); with left padding the mask comes from the pad
        tokens unless ``attention_mask`` [batch, pos] is given, and positions skip the padding, so
        each prompt gets the logits it has alone.
        """
        n_layers = self.cfg.n_layers
        check_padding_side(padding_side)
        if start_at_layer is None:
            tokens = self._as_tokens(input, prepend_bos, padding_side)
            attention_mask = mask_for(self, tokens, attention_mask, padding_side, prepend_bos)
            resid = self._embed(tokens, attention_mask)
            start = 0
        else:
            resid = input
            start = start_at_layer % n_layers if start_at_layer < 0 else start_at_layer
        stop = n_layers if stop_at_layer is None else (stop_at_layer % n_layers if stop_at_layer < 0 else stop_at_layer)
        if attention_mask is not None:
            attention_mask = attention_mask.to(resid.device)
        for block in self.blocks[start:stop]:
            resid = block(resid, attention_mask)
        if stop_at_layer is not None:
            return resid
        if return_type is None:
            # Still run the final norm so its hooks fire; skip only the unembedding.
            self.ln_final(resid)
            return None
        logits = self.unembed(self.unembed.hook_in(self.ln_final(resid)))  # [batch, pos, d_vocab]
        if return_type == "logits":
            return logits
        if tokens is None:
            raise ValueError("a loss needs the token ids: pass tokens= when starting from a residual")
        loss = lm_cross_entropy(logits, tokens, attention_mask, per_token=loss_per_token)
        if return_type == "loss":
            return loss
        if return_type == "both":
            return logits, loss
        raise ValueError(f"unknown return_type {return_type!r}")

    def _as_tokens(self, input: Union[str, list[str], torch.Tensor], prepend_bos: Optional[bool],
                   padding_side: Optional[str] = None) -> torch.Tensor:
        if isinstance(input, (str, list)):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
        else:
            tokens = input
        if tokens.dim() == 1:
            tokens = tokens[None]
        if tokens.shape[1] == 0:
            raise ValueError("the prompt has no tokens")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"the prompt has {tokens.shape[1]} tokens; this model reads at most {self.cfg.n_ctx}")
        return tokens.to(self.W_E.device)

    def _embed(self, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        resid = self.hook_embed(self.embed(tokens))
        if self.cfg.positional_embedding_type == "standard":
            resid = resid + self.hook_pos_embed(self.pos_embed(*tokens.shape, attention_mask))
        elif self.cfg.positional_embedding_type == "shortformer":  # not in the residual: kept for the layers
            shortformer.CURRENT.set(self.hook_pos_embed(self.pos_embed(*tokens.shape, attention_mask)))
        return resid

    def hook_points(self):
        """Every hook point, in forward order (TransformerLens's ``hook_dict.values()``)."""
        return self.hook_dict.values()

    def _pairs(self, fwd_hooks: FwdHooks) -> list[tuple[HookPoint, HookFn]]:
        pairs = []
        for name_or_filter, fn in fwd_hooks:
            for name in resolve_names(name_or_filter, self.hook_dict):
                pairs.append((self.hook_dict[name], fn))
        return pairs

    def hooks(self, fwd_hooks: FwdHooks = (), bwd_hooks: FwdHooks = (), reset_hooks_end: bool = True,
              clear_contexts: bool = False) -> active_hooks:
        """``with model.hooks(fwd_hooks=[(name, fn)]): ...``: the hooks apply in this thread, inside the block.

        A backward hook ``fn(grad, hook)`` is attached to the activation's gradient during the forward pass.
        ``reset_hooks_end=False`` (TransformerLens's) adds them model-wide instead, for every thread,
        until ``reset_hooks()``; ``clear_contexts`` empties the touched points' ``hook.ctx`` at the end.
        """
        fwd, bwd = self._pairs(list(fwd_hooks)), self._pairs(list(bwd_hooks))
        if not reset_hooks_end:
            # Tagged with the context level they were added at, as TransformerLens does.
            level = getattr(self, "context_level", 0) + 1
            for point, fn in fwd:
                point.add_hook(fn, level=level)
            for point, fn in bwd:
                point.add_hook(fn, dir="bwd", level=level)
            scope = active_hooks([])
        else:
            scope = active_hooks(fwd + [(point, grad_hook(fn)) for point, fn in bwd])
        if clear_contexts:  # the touched points only, as the 4.3.0 bridge does (its legacy HookedRootModule clears all)
            scope.on_exit = lambda: [point.clear_context() for point, _ in fwd + bwd]
        scope.target = self
        return scope

    def run_with_hooks(self, *args: Any, fwd_hooks: FwdHooks = (), bwd_hooks: FwdHooks = (), reset_hooks_end: bool = True,
                       clear_contexts: bool = False, **kwargs: Any) -> Any:
        with self.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts):
            return self(*args, **kwargs)

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NameFilter = None,
        device: Optional[Union[str, torch.device]] = None,
        remove_batch_dim: bool = False,
        pos_slice: Any = None,
        **kwargs: Any,
    ):
        """Run and keep activations. ``names_filter=None`` keeps every hook point except
        ``hook_result`` (per-head outputs, costly: name it, set ``cfg.use_attn_result``, or use
        ``cache.stack_head_results``, which derives it from ``hook_z``) and the receivers'
        per-head inputs. ``remove_batch_dim`` needs a batch of one. ``pos_slice`` keeps only those
        positions of every activation (an integer keeps a length-1 axis, as in TransformerLens)."""
        from .cache import ActivationCache
        from .utils import Slice

        if names_filter is None:
            skipped = () if self.cfg.use_attn_result else ("hook_result",)
            skipped += ("hook_q_input", "hook_k_input", "hook_v_input")
            names = [name for name in self.hook_dict if not name.endswith(skipped)]
        else:
            names = resolve_names(names_filter, self.hook_dict)
        store: dict[str, torch.Tensor] = {}
        positions = None if pos_slice is None else Slice.unwrap(pos_slice)

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            kept = tensor.detach()
            if positions is not None:
                kept = positions.apply(kept, dim=-2 if hook.name.endswith(("hook_pattern", "hook_attn_scores")) else 1)
            if remove_batch_dim:
                if kept.shape[0] != 1:
                    raise ValueError(f"remove_batch_dim needs a batch of one, got {kept.shape[0]}")
                kept = kept[0]
            store[hook.name] = kept.to(device) if device is not None else kept

        with active_hooks([(self.hook_dict[name], save) for name in names]):
            out = self(*args, **kwargs)
        return out, ActivationCache(store, self, has_batch_dim=not remove_batch_dim)

    # ----------------------------------------------------------------- weights
    W_E = property(lambda self: self.embed.W_E, doc="Token embeddings [d_vocab, d_model].")
    W_pos = property(lambda self: self.pos_embed.W_pos, doc="Learned positional embeddings [n_ctx, d_model].")
    W_U = property(lambda self: self.unembed.W_U, doc="Unembedding [d_model, d_vocab].")
    b_U = property(lambda self: self.unembed.b_U, doc="Unembedding bias [d_vocab].")

    def _stack(self, part: str, name: str, expand_kv: bool = False) -> torch.Tensor:
        tensors = [getattr(getattr(block, part), name) for block in self.blocks]
        stacked = torch.stack(tensors)
        if expand_kv and self.cfg.n_kv_groups > 1:
            stacked = stacked.repeat_interleave(self.cfg.n_kv_groups, dim=1)
        return stacked

    W_Q = property(lambda self: self._stack("attn", "W_Q"))  # [layer, head, d_model, d_head]
    W_K = property(lambda self: self._stack("attn", "W_K", expand_kv=True))
    W_V = property(lambda self: self._stack("attn", "W_V", expand_kv=True))
    W_O = property(lambda self: self._stack("attn", "W_O"))  # [layer, head, d_head, d_model]
    b_Q = property(lambda self: self._stack("attn", "b_Q"))
    b_K = property(lambda self: self._stack("attn", "b_K", expand_kv=True))
    b_V = property(lambda self: self._stack("attn", "b_V", expand_kv=True))
    b_O = property(lambda self: self._stack("attn", "b_O"))
    W_in = property(lambda self: self._stack("mlp", "W_in"))  # [layer, d_model, d_mlp]
    b_in = property(lambda self: self._stack("mlp", "b_in"))
    W_gate = property(lambda self: self._stack("mlp", "W_gate"))
    W_out = property(lambda self: self._stack("mlp", "W_out"))  # [layer, d_mlp, d_model]
    b_out = property(lambda self: self._stack("mlp", "b_out"))

    def tokens_to_residual_directions(self, tokens: Union[str, int, torch.Tensor]) -> torch.Tensor:
        """Unembedding columns of the given tokens: [..., d_model] (a string must be one token)."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        return self.W_U[:, torch.as_tensor(tokens, device=self.W_U.device)].movedim(0, -1)

    def weights_hash(self) -> str:
        """sha256 over every weight, in name order (memoised; weights are treated as read-only)."""
        if self._weights_hash is None:
            self._weights_hash = weights_digest(self.state_dict())
        return self._weights_hash

    def to(self, *args: Any, **kwargs: Any) -> "HookedTransformer":
        super().to(*args, **kwargs)
        self.cfg.device = str(self.W_E.device)
        self.cfg.dtype = self.W_E.dtype
        self._weights_hash = None
        return self

    # ----------------------------------------------------------------- loading
    # The model knows nothing of checkpoints: ``lens_core.loading`` depends on this module and installs
    # itself here when it is imported (``lens_core/__init__`` imports it, so it is always there).
    _checkpoint_loader: Any = None
    # What the loader did with the processed-weight cache (``lens_core.weight_cache``): "loaded from ...",
    # "stored in ...", "off", or why nothing was stored. A model built here, not loaded, has no cache.
    weight_cache: str = "off"

    @classmethod
    def _loader(cls) -> Any:
        if cls._checkpoint_loader is None:
            raise RuntimeError("no checkpoint loader installed: import lens_core (it installs lens_core.loading)")
        return cls._checkpoint_loader

    @classmethod
    def from_pretrained(cls, name_or_path: str, default_prepend_bos: Optional[bool] = None, hf_model: Any = None,
                        tokenizer: Any = None, **kwargs: Any) -> "HookedTransformer":
        """Load a checkpoint (see ``lens_core.loading``). As in TransformerLens: ``hf_model=`` converts an
        in-memory ``transformers`` model instead of reading files; ``default_prepend_bos`` sets
        ``cfg.default_prepend_bos``; ``fold_ln``, ``center_writing_weights``, ``center_unembed``,
        ``fold_value_biases``, ``dtype``, ``device`` choose the processing and placement."""
        loader = cls._loader()
        if hf_model is not None:
            model = loader.load_from_hf_model(hf_model, tokenizer=tokenizer, model_name=name_or_path, **kwargs)
        else:
            model = loader.load_pretrained(name_or_path, **kwargs)
            if tokenizer is not None:
                model.tokenizer = tokenizer
        if default_prepend_bos is not None:
            model.cfg.default_prepend_bos = default_prepend_bos
        return model

    @classmethod
    def from_hf_model(cls, hf_model: Any, tokenizer: Any = None, **kwargs: Any) -> "HookedTransformer":
        return cls._loader().load_from_hf_model(hf_model, tokenizer=tokenizer, **kwargs)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """:meth:`HookedTransformer.weights_hash` of a state dict: sha256 over each name, dtype and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def lm_cross_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, per_token: bool = False
) -> torch.Tensor:
    """Next-token loss: [batch, pos-1] per token, or its mean. With a mask, TransformerLens's rule: a
    prediction counts when the token and the next one are both real (0 per token otherwise)."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    loss = -log_probs.gather(-1, tokens[:, 1:, None].to(logits.device))[..., 0]
    if attention_mask is not None:
        keep = (attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()).to(loss.device)
        loss = loss.masked_fill(~keep, 0.0)
        return loss if per_token else loss.sum() / keep.sum()
    return loss if per_token else loss.mean()


_SUB_ORDER = ["hook_resid_pre", "hook_q_input", "hook_k_input", "hook_v_input", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.q_norm", "attn.k_norm", "attn.hook_rot_q", "attn.hook_rot_k",
              "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "ln1_post", "hook_attn_out",
              "hook_resid_mid", "hook_mlp_in", "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "ln2_post", "hook_mlp_out", "hook_resid_post"]


def _hook_order(name: str) -> tuple:
    """Forward order, so ``model.hook_dict`` and caches list activations as they happen."""
    if name.startswith("hook_"):
        return (0, 0, name)
    if name.startswith("ln_final"):
        return (2, 0, name)
    if name.startswith("unembed"):
        return (3, 0, name)
    _, layer, rest = name.split(".", 2)
    rank = next((i for i, prefix in enumerate(_SUB_ORDER) if rest.startswith(prefix)), len(_SUB_ORDER))
    return (1, int(layer), rank, rest)
