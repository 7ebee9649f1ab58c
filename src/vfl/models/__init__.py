"""Model adapters, found from the loaded model's class, and loading by hub id or local path.

Lookups are local: a hub id is read from the local Hugging Face cache only, unless ``download=True``
(this saves a user without network a minute of retries before the error). Everything about a load
that can be wrong (the device, the dtype, the id, the class) is checked before any weight is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vfl.errors import VflError, model_not_found
from vfl.runner import swapped_in
from vfl.models.base import Adapter, Prompt
from vfl.models.gemma3 import Gemma3Adapter
from vfl.models.idefics3 import Idefics3Adapter
from vfl.models.internvl import InternVLAdapter
from vfl.models.llava import LlavaAdapter
from vfl.models.qwen2_vl import Qwen2VLAdapter
from vfl.models.qwen3_vl import Qwen3VLAdapter

ADAPTERS = (LlavaAdapter, Qwen2VLAdapter, Qwen3VLAdapter, Idefics3Adapter, InternVLAdapter, Gemma3Adapter)
SUPPORTED = tuple(name for adapter in ADAPTERS for name in adapter.model_classes)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

__all__ = ["Adapter", "Prompt", "ADAPTERS", "SUPPORTED", "adapter_for", "load", "checkpoint_config", "decoder_shape",
           "check_device"]


def adapter_for(model, processor) -> Adapter:
    """The adapter of the model's class (or of its closest supported base class)."""
    for cls in type(model).__mro__:
        for adapter in ADAPTERS:
            if cls.__name__ in adapter.model_classes:
                return adapter(model, processor)
    raise VflError(f"{type(model).__name__} is not supported; supported classes: {', '.join(SUPPORTED)}")


def device_name(device: str) -> str:
    """What a result records of the device it was measured on: the GPU's name, or the CPU threads used."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{device} ({torch.get_num_threads()} threads)"


def check_device(device: str) -> None:
    """Refuse a device this torch build cannot use, in one sentence."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise VflError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise VflError(f"--device {device} needs a CUDA GPU, but this torch ({torch.__version__}, {build}) sees none; "
                       "use --device cpu or install a CUDA build of torch")
    if kind == "cuda" and torch.device(device).index is not None and torch.device(device).index >= torch.cuda.device_count():
        raise VflError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise VflError(f"--device {device} needs Apple's MPS, which this machine does not have")


def torch_dtype(dtype: str, device: str, device_map: str | None = None):
    """``auto``: float32 on CPU (fast and exact there), the checkpoint's own dtype elsewhere."""
    if dtype == "auto":
        return torch.float32 if device == "cpu" and device_map is None else "auto"
    if dtype not in DTYPES:
        raise VflError(f"unknown --dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def checkpoint_config(spec: str, download: bool = False):
    """The checkpoint's config, from a local directory or the local hub cache (``download``: the hub too)."""
    from transformers import AutoConfig

    import vfl.nano.vision  # noqa: F401  (registers nano's vision tower, so a saved nano loads by path)

    from huggingface_hub.errors import StrictDataclassError

    local = os.path.isdir(spec)
    try:
        return AutoConfig.from_pretrained(spec, local_files_only=not (download or local))
    except (StrictDataclassError, TypeError) as err:  # a config.json whose fields have the wrong types
        raise VflError(f"cannot load model {spec!r}: its config.json is not valid "
                       f"({' '.join(str(err).split())[:300]})") from None
    except (OSError, ValueError) as err:
        if not local:
            raise model_not_found(spec, download, str(err).splitlines()[0] if download else "") from None
        raise VflError(f"cannot load model {spec!r}: it is not a local model directory "
                       f"({str(err).splitlines()[0]})") from None


def nano_weights(spec: str) -> Path | None:
    """The weights folder a nano spec names: ``nano`` (the shipped weights) or ``nano:DIR`` (a `vfl nano
    train` run folder or its weights/ folder); None for any other spec."""
    if spec == "nano":
        from vfl.nano.model import WEIGHTS

        return WEIGHTS
    if not spec.startswith("nano:"):
        return None
    folder = Path(spec.split(":", 1)[1])
    weights = swapped_in(folder / "weights")  # a training run swaps its weights in whole as it goes
    if (weights / "spec.json").is_file():
        folder = weights
    if not (folder / "spec.json").is_file():
        raise VflError(f"{folder} holds no trained nano weights (spec.json); give a `vfl nano train` run folder")
    return folder


def decoder_shape(spec: str, download: bool = False) -> tuple[int, int]:
    """(decoder layers, key/value heads per layer) of ``spec`` from its config alone (no weights read)."""
    if nano_weights(spec) is not None:
        from vfl.nano.parts import smollm2_shape

        return smollm2_shape()
    if spec.startswith("tiny:"):
        from vfl.models.tiny import FAMILIES, TINY_KV_HEADS, TINY_LAYERS

        if spec.split(":", 1)[1] not in FAMILIES:
            raise VflError(f"unknown tiny family {spec.split(':', 1)[1]!r}; choose one of {', '.join(FAMILIES)}")
        return TINY_LAYERS, TINY_KV_HEADS
    text = _supported_config(spec, download).get_text_config()
    shape = text.num_hidden_layers, getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    for name, value in zip(("num_hidden_layers", "num_key_value_heads"), shape):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VflError(f"model {spec!r}: its config gives {name} {value!r}, not a positive whole number")
    return shape


def _supported_config(spec: str, download: bool):
    config = checkpoint_config(spec, download)
    architectures = config.architectures or []
    if not set(architectures) & set(SUPPORTED):
        raise VflError(f"{spec!r} is a {', '.join(architectures) or config.model_type} model, which is not supported; "
                       f"supported classes: {', '.join(SUPPORTED)}")
    return config


def load(spec: str, dtype: str = "auto", device: str = "cpu", device_map: str | None = None,
         download: bool = False) -> Adapter:
    """Load a model and its processor: ``nano`` (vfl's own; ``nano:DIR`` with the weights of a `vfl nano train`
    run), a hub id, a local directory or ``tiny:<family>``."""
    check_device(device)
    resolved = torch_dtype(dtype, device, device_map)
    weights = nano_weights(spec)
    if weights is not None:
        from vfl.nano.model import load_nano

        model, processor = load_nano(weights, torch.float32 if resolved == "auto" else resolved, device)
        return adapter_for(model, processor)
    if spec.startswith("tiny:"):
        from vfl.models.tiny import build_tiny

        try:
            model, processor = build_tiny(spec.split(":", 1)[1])
        except ValueError as err:
            raise VflError(str(err)) from None
        return adapter_for(model.to(device), processor)

    from transformers import AutoModelForImageTextToText

    from vfl.models.processors import load_processor

    config = _supported_config(spec, download)
    local_only = not (download or os.path.isdir(spec))
    try:
        model = AutoModelForImageTextToText.from_pretrained(spec, dtype=resolved, device_map=device_map,
                                                            local_files_only=local_only)
        processor = load_processor(spec, config.model_type, local_only)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:  # missing weights or tokenizer files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VflError(f"cannot load model {spec!r}: {reason[:300]}") from None
    if device_map is None:
        model = model.to(device)
    model.eval()
    return adapter_for(model, processor)
