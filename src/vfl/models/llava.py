"""LLaVA (`LlavaForConditionalGeneration`, e.g. llava-hf/llava-1.5-7b-hf, and `nano`)."""

from vfl.models.base import Adapter


class LlavaAdapter(Adapter):
    family = "llava"
    model_classes = ("LlavaForConditionalGeneration",)
    box_format = "unit"
