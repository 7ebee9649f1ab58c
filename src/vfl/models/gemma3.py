"""Gemma 3 (`Gemma3ForConditionalGeneration`): the image's soft tokens attend to each other both ways,
which the model reads from ``token_type_ids``, so the prefill passes them; its layers alternate sliding-
window and global attention, and a prompt longer than the window is refused (the window would cut the
visual span out of the sliding layers' cache). Gemma 3 has no fixed box format: grounding answers are
read as [x0, y0, x1, y1] on a 0-1000 grid."""

from vfl.errors import VflError
from vfl.models.base import Adapter, Prompt


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_classes = ("Gemma3ForConditionalGeneration",)
    box_format = "thousand"
    token_inputs = ("token_type_ids",)

    def prompt(self, inputs) -> Prompt:
        window = getattr(self.text_config, "sliding_window", None)
        if window is not None and inputs["input_ids"].shape[1] >= window:
            raise VflError(f"the prompt has {inputs['input_ids'].shape[1]} tokens, more than Gemma 3's sliding "
                           f"window of {window}; use a shorter question or a smaller image")
        return super().prompt(inputs)
