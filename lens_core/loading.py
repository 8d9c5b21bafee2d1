"""Loading Hugging Face checkpoints into a HookedTransformer.

Sources: the bundled default model ("default"), a local directory written by
``save_pretrained``, a Hugging Face Hub name (downloaded with huggingface_hub,
weights and tokenizer files only), or an in-memory ``transformers`` model.
Weights are read straight from safetensors (no ``transformers`` model is built),
converted by the architecture's family module, checked tensor by tensor,
processed in float32, then cast to the requested dtype and device.
Memory and time: safetensors files are memory-mapped copy-on-write, one mapping per
tensor (:func:`lens_core.safetensors_io.map_file`); each weight is handed over to the
converter (dropped from the reader once read) and processed out of place, reading
the mapping and writing the result into a new buffer: one pass per step, no
copy-then-process. A tensor not 64-byte aligned in the file is copied out by the
reader instead (results must not depend on the file's layout) and that copy is
processed in place, so it is in memory once too. A weight's mapping is released once
its processed value exists, so a float32 load peaks near the final model's size
(``bench/forward.py`` prints it; ``bench/load_breakdown.py`` times each step). Any
weight no step changed is copied out of the mapping at the end: the model never views
the checkpoint file (a private mapping still shows what another process writes to a
page it has not copied, so a later rewrite of the file cannot reach a loaded model).
``trust_remote_code`` is off unless the caller turns it on.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .config import HookedTransformerConfig
from .families import family_for
from .families.reader import WeightReader
from .model import HookedTransformer
from .processing import fold_config, process_weights, processing_notes
from .safetensors_io import MappedFile, SafetensorsError, map_file
from . import weight_arena, weight_cache as _weight_cache

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"

# Names users know from TransformerLens, mapped to Hub repositories.
ALIASES = {
    "gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl",
    **{f"pythia-{size}": f"EleutherAI/pythia-{size}" for size in ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b")},
    "qwen2-0.5b": "Qwen/Qwen2-0.5B", "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "gemma-2-2b": "google/gemma-2-2b", "gemma-3-1b-pt": "google/gemma-3-1b-pt", "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "olmo-2-1b": "allenai/OLMo-2-0425-1B",
}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

log = logging.getLogger(__name__)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_IGNORED = re.compile(r"(\.attn\.(masked_)?bias|\.attention\.(masked_)?bias|rotary_emb\.inv_freq)$")
_HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says why, in words a user can act on."""


def as_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose float32, float16 or bfloat16") from None


def resolve_source(name_or_path: str, revision: Optional[str] = None) -> Path:
    """A local directory holding the checkpoint: the bundled model, a path, or a Hub download."""
    if name_or_path == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise ModelLoadError(f"the bundled default model is missing from {DEFAULT_MODEL_DIR}")
        return DEFAULT_MODEL_DIR
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith((".", "~")) or not _HUB_NAME.match(name_or_path):
        raise ModelLoadError(f"no model directory at {name_or_path!r}")
    repo = ALIASES.get(name_or_path.lower(), name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as exc:  # network errors, unknown repositories, gated models: all end here
        raise ModelLoadError(
            f"could not fetch {repo!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Check the name, the network, or pass a local directory."
        ) from exc


def weight_files(directory: Path) -> list[Path]:
    """The weight files a load of ``directory`` reads: ``model.safetensors``, the shards its index names, or a
    pickled ``pytorch_model.bin``; [] when there are none (a sharded index that cannot be read raises)."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.exists():
        return [single]
    if index.exists():
        try:
            return [directory / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"cannot read the weights in {directory}: {index.name} is not a shard index ({exc})") from exc
    legacy = directory / "pytorch_model.bin"
    return [legacy] if legacy.exists() else []


def open_state_dict(directory: Path, copy_into: Any = None) -> tuple[dict[str, torch.Tensor], list[MappedFile]]:
    """(weights, the files they map): safetensors (single file or sharded) memory-mapped copy-on-write;
    pickled .bin (no mappings: tensors of their own) only with weights_only loading. ``copy_into``: where a
    misaligned tensor is copied (``lens_core.safetensors_io.map_file``)."""
    shards = weight_files(directory)
    try:
        if shards and shards[0].suffix == ".safetensors":
            files = [map_file(shard, copy_into=copy_into) for shard in shards]
            tensors: dict[str, torch.Tensor] = {}
            for mapped in files:
                tensors.update(mapped.tensors)
                mapped.tensors = {}  # the loader's dict is the one reference: each weight is freed once consumed
            return tensors, files
    except (SafetensorsError, OSError) as exc:
        raise ModelLoadError(f"cannot read the weights in {directory}: {exc}") from exc
    if shards:
        return torch.load(shards[0], map_location="cpu", weights_only=True), []
    raise ModelLoadError(f"no weights (model.safetensors) in {directory}")


def build_model(
    hf_config: Any,
    tensors: Mapping[str, torch.Tensor],
    tokenizer: Any = None,
    model_name: str = "custom",
    dtype: Union[str, torch.dtype, None] = None,
    device: Optional[Union[str, torch.device]] = None,
    owned: bool = False,
    mapped: tuple[MappedFile, ...] | list[MappedFile] = (),
    arena: Optional[weight_arena.Arena] = None,
    **processing: bool,
) -> HookedTransformer:
    """Convert, check and process HF weights into a model. ``processing``: the steps of
    :func:`lens_core.processing.process_weights` (all on unless turned off).

    ``owned=True``: ``tensors`` is a dict of tensors this call may consume and overwrite (nothing
    else refers to them), so the weights are processed in place and no second copy is made.
    ``mapped``: ``tensors`` view these files (:func:`open_state_dict`): the dict is consumed, a result
    computed from a view of a file is written into fresh memory (any other tensor, e.g. a misaligned one
    the reader copied out, is processed in place), and whatever still views a file is copied out of it.
    ``arena``: where the processed weights are made, to be stored for the next load (``lens_core.weight_arena``).
    """
    family = family_for(hf_config.model_type)
    cfg: HookedTransformerConfig = family.config_from_hf(hf_config)
    cfg.model_name = model_name
    names = list(tensors)
    reader = WeightReader(tensors, family.PREFIXES, consume=owned or bool(mapped))
    weights = family.convert(reader, cfg)
    unused = [name for name in names if name not in reader.used and not _IGNORED.search(name)]
    if unused:
        raise ModelLoadError(f"checkpoint has tensors this {hf_config.model_type} config does not use, e.g. {unused[0]!r}")
    if owned or mapped:
        tensors.clear()  # the ignored ones (attention masks, rotary tables): not needed
    del reader
    skipped = processing_notes(cfg, **{k: v for k, v in processing.items() if k != "fold_value_biases"})

    def views_file(tensor: torch.Tensor) -> bool:
        return any(file.aliases(tensor) for file in mapped)

    inplace = owned or (bool(mapped) and (lambda tensor: not views_file(tensor)))
    target = as_dtype(dtype)
    new = torch.empty
    if arena is not None and target == torch.float32:
        # Each result is made in the arena, and changed there by later steps; other dtypes are processed here
        # and cast into the arena when it is sealed.
        new, inplace = arena.new, arena.holds
    applied = process_weights(weights, cfg, inplace=inplace, new=new, **processing)
    if arena is not None:
        try:
            sealed = arena.seal(weights, target)
        except OSError as exc:
            arena.abort()
            why = f"not stored: {exc}"
            log.warning("the weight cache entry %s is not stored (%s); the model is loaded all the same",
                        arena.entry.path, exc)
            # The model must not view the arena's shared mapping.
            weights = {name: t.clone() if arena.holds(t) else t for name, t in weights.items()}
        else:
            del weights
            model = _assemble(cfg, sealed, tokenizer, applied, skipped, target, device)
            model.weight_cache = arena.persist(applied)
            return model
    for name, tensor in weights.items():
        if views_file(tensor):
            weights[name] = tensor.clone()  # no step changed it: the model must not view the file
    model = _assemble(cfg, weights, tokenizer, applied, skipped, target, device)
    if arena is not None:
        model.weight_cache = why  # the entry could not be made (_assemble says "off" otherwise)
    return model


def _assemble(cfg: HookedTransformerConfig, weights: dict[str, torch.Tensor], tokenizer: Any, applied: dict[str, bool],
              skipped: dict[str, str], target: torch.dtype, device: Optional[Union[str, torch.device]],
              cached: Optional[dict[str, Any]] = None) -> HookedTransformer:
    """The model around processed ``weights``, cast to ``target`` and moved to ``device``. ``cached``: what a weight
    cache entry kept beside them (``path``, ``weights_hash``)."""
    cfg.dtype = target
    cfg.device = str(torch.device(device)) if device is not None else "cpu"
    cfg.tokenizer_name = cfg.model_name
    cfg.init_weights = False  # every weight is loaded below
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    load_weights(model, weights)
    model.processing = applied
    model.processing_skipped = skipped
    model.weight_cache = f"loaded from {cached['path']}" if cached else "off"
    model.to(device=cfg.device, dtype=target)  # weights from the cache or an arena are in ``target`` already
    if cached:
        model._weights_hash = cached["weights_hash"]  # to() forgets it; the bytes it hashes are the same on every device
    return model


def load_weights(model: HookedTransformer, sd: dict[str, torch.Tensor]) -> None:
    """Put a converted state dict into the model, checking every name and shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise ModelLoadError(f"weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in sd.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelLoadError(f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    if sd["unembed.weight"].data_ptr() == sd["embed.W_E"].data_ptr():
        sd["unembed.weight"] = sd["unembed.weight"].clone()  # tied in the checkpoint, separate here
    model.load_state_dict({name: tensor.contiguous() for name, tensor in sd.items()}, strict=True, assign=True)
    for param in model.parameters():
        param.requires_grad_(False)


def load_pretrained(
    name_or_path: str,
    dtype: Union[str, torch.dtype, None] = None,
    device: Optional[Union[str, torch.device]] = None,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    revision: Optional[str] = None,
    trust_remote_code: bool = False,
    weight_cache: _weight_cache.Choice = None,
) -> HookedTransformer:
    """``HookedTransformer.from_pretrained``: see the module docstring for sources. ``weight_cache``: where
    processed weights are kept for the next load (``lens_core.weight_cache``: None = its default, False = off)."""
    from transformers import AutoConfig, AutoTokenizer

    directory = resolve_source(name_or_path, revision)
    try:
        hf_config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"could not read the config in {directory}: {exc}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except Exception:
        tokenizer = None  # weights without a tokenizer still work with token ids
    processing = {"fold_ln": fold_ln, "center_writing_weights": center_writing_weights,
                  "center_unembed": center_unembed, "fold_value_biases": fold_value_biases}
    entry, why = None, "off"
    files = weight_files(directory)
    if files:
        entry, why = _weight_cache.entry_for(weight_cache, [directory / "config.json", *files], as_dtype(dtype), processing)
    try:
        arena = None
        if entry is not None:
            model = _from_weight_cache(entry, hf_config, tokenizer, name_or_path, dtype, device)
            if model is not None:
                return model
            arena, why = weight_arena.arena_for(entry, files, as_dtype(dtype))
        tensors, mapped = open_state_dict(directory, copy_into=arena.copy_slot if arena is not None else None)
        # Mapped files: consumed, processed out of place; a .bin's tensors are ours alone: processed in place.
        model = build_model(hf_config, tensors, tokenizer, name_or_path, dtype, device, owned=not mapped, mapped=mapped,
                            arena=arena, **processing)
        if arena is None:
            model.weight_cache = why  # why nothing is stored: off, a file changed too recently, over the bound
        return model
    except ModelLoadError:
        raise
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc


def _from_weight_cache(entry: _weight_cache.Entry, hf_config: Any, tokenizer: Any, model_name: str, dtype: Any,
                       device: Any) -> Optional[HookedTransformer]:
    """The model from ``entry``'s processed weights, or None when there is no usable entry (one that does not fit
    this model is removed, so the load that follows stores a new one)."""
    cached = _weight_cache.lookup(entry)
    if cached is None:
        return None
    tensors, info = cached
    cfg: HookedTransformerConfig = family_for(hf_config.model_type).config_from_hf(hf_config)
    cfg.model_name = model_name
    try:
        processing = {str(name): bool(value) for name, value in entry.key["processing"].items()}
        skipped = processing_notes(cfg, **{k: v for k, v in processing.items() if k != "fold_value_biases"})
        applied = {str(name): bool(value) for name, value in info["applied"].items()}
        fold_config(cfg, applied)
        return _assemble(cfg, tensors, tokenizer, applied, skipped, as_dtype(dtype), device,
                         cached={"weights_hash": str(info["weights_hash"]), "path": str(entry.path)})
    except (ModelLoadError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        _weight_cache.discard(entry, f"does not fit this model ({exc})")
        return None


def load_from_hf_model(hf_model: Any, tokenizer: Any = None, model_name: Optional[str] = None, **kwargs: Any) -> HookedTransformer:
    """``HookedTransformer.from_hf_model``: convert an in-memory ``transformers`` causal LM."""
    name = model_name or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
    # Cloned so that our weights never alias the caller's model.
    state = {name_: tensor.detach().clone() for name_, tensor in hf_model.state_dict().items()}
    return build_model(hf_model.config, state, tokenizer, name, owned=True, **kwargs)


class _CheckpointLoader:
    """What ``HookedTransformer.from_pretrained`` / ``from_hf_model`` call: this module's two entry points."""

    load_pretrained = staticmethod(load_pretrained)
    load_from_hf_model = staticmethod(load_from_hf_model)


HookedTransformer._checkpoint_loader = _CheckpointLoader()
