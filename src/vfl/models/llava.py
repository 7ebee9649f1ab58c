"""LLaVA (`LlavaForConditionalGeneration`, e.g. llava-hf/llava-1.5-7b-hf, and `nano`), and the any-resolution
LLaVA-NeXT and LLaVA-OneVision: their tiles and row-newline embeddings all sit at image-token positions, so
the shared visual span (first to last image token) carries the whole image. A pair whose images give
different tile layouts gives different prompts and is refused (or resized with --resize)."""

from vfl.models.base import Adapter


class LlavaAdapter(Adapter):
    family = "llava"
    model_classes = ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration",
                     "LlavaOnevisionForConditionalGeneration")
    box_format = "unit"
