"""Qwen2-VL and Qwen2.5-VL: multimodal RoPE.

Their positions are 3-D and not the token index, so they are computed once from the whole prompt with
the model's public `get_rope_index` and passed explicitly to every forward: nothing relies on the
`rope_deltas` the model keeps between calls.
"""

import torch

from vfl.models.base import Adapter


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_classes = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    box_format = "pixel"

    def positions(self, inputs) -> torch.Tensor:
        positions, _ = self.model.model.get_rope_index(
            inputs["input_ids"].to(self.device), mm_token_type_ids=inputs["mm_token_type_ids"].to(self.device),
            image_grid_thw=inputs["image_grid_thw"].to(self.device))
        return positions.cpu()
