"""Idefics3 and SmolVLM: the decoder is `model.text_model`; image tokens may be split in tiles."""

from vfl.models.base import Adapter


class Idefics3Adapter(Adapter):
    family = "idefics3"
    model_classes = ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration")
    box_format = "unit"

    @property
    def language_model(self):
        return self.model.model.text_model
