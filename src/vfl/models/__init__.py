"""Model adapters, found from the loaded model's class, and loading by hub id or local path."""

from __future__ import annotations

import torch

from vfl.errors import VflError
from vfl.models.base import Adapter, Prompt
from vfl.models.idefics3 import Idefics3Adapter
from vfl.models.llava import LlavaAdapter
from vfl.models.qwen2_vl import Qwen2VLAdapter

ADAPTERS = (LlavaAdapter, Qwen2VLAdapter, Idefics3Adapter)
SUPPORTED = tuple(name for adapter in ADAPTERS for name in adapter.model_classes)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

__all__ = ["Adapter", "Prompt", "ADAPTERS", "SUPPORTED", "adapter_for", "load"]


def adapter_for(model, processor) -> Adapter:
    """The adapter of the model's class (or of its closest supported base class)."""
    for cls in type(model).__mro__:
        for adapter in ADAPTERS:
            if cls.__name__ in adapter.model_classes:
                return adapter(model, processor)
    raise VflError(f"{type(model).__name__} is not supported; supported classes: {', '.join(SUPPORTED)}")


def load(spec: str, dtype: str = "auto", device: str = "cpu", device_map: str | None = None) -> Adapter:
    """Load a model and its processor: ``nano`` (vfl's own), a hub id, a local directory or ``tiny:<family>``.

    ``dtype="auto"`` means float32 on CPU (fast and exact there) and the checkpoint's dtype elsewhere.
    """
    if spec == "nano":
        from vfl.nano.model import load_nano

        model, processor = load_nano(dtype=DTYPES.get(dtype, torch.float32), device=device)
        return adapter_for(model, processor)
    if spec.startswith("tiny:"):
        from vfl.models.tiny import build_tiny

        try:
            model, processor = build_tiny(spec.split(":", 1)[1])
        except ValueError as err:
            raise VflError(str(err)) from None
        return adapter_for(model.to(device), processor)

    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise VflError(f"cannot load model {spec!r}: it is neither a local model directory nor a hub id in the "
                       f"local cache ({str(err).splitlines()[0]})") from None
    architectures = config.architectures or []
    if not set(architectures) & set(SUPPORTED):
        raise VflError(f"{spec!r} is a {', '.join(architectures) or config.model_type} model, which is not supported; "
                       f"supported classes: {', '.join(SUPPORTED)}")
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" and device_map is None else "auto"
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise VflError(f"unknown --dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}")
    model = AutoModelForImageTextToText.from_pretrained(spec, dtype=torch_dtype, device_map=device_map)
    if device_map is None:
        model = model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(spec)
    return adapter_for(model, processor)
