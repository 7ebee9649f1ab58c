"""Qwen2-VL and Qwen2.5-VL: multimodal RoPE, and two box conventions.

Their positions are 3-D and not the token index, so they are computed once from the whole prompt with
the model's public `get_rope_index` and passed explicitly to every forward: nothing relies on the
`rope_deltas` the model keeps between calls. Qwen2-VL writes boxes in 0-1000; Qwen2.5-VL in absolute pixels of
the image as its processor resized it (a multiple of 28 px on each side), so those are scaled back.
"""

import torch
from PIL import Image

from vfl.models.base import Adapter


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_classes = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")

    @property
    def box_format(self) -> str:
        return "thousand" if self.model.config.model_type == "qwen2_vl" else "pixel"

    def model_image_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        if self.box_format != "pixel":
            return None
        resized = self.__dict__.setdefault("_resized", {})  # by image size alone: once per size, not per answer
        if size not in resized:
            processor = self.processor.image_processor
            grid = processor(images=[Image.new("RGB", size)], return_tensors="pt")["image_grid_thw"][0]
            resized[size] = int(grid[2]) * processor.patch_size, int(grid[1]) * processor.patch_size
        return resized[size]

    def positions(self, inputs) -> torch.Tensor:
        positions, _ = self.model.model.get_rope_index(
            inputs["input_ids"].to(self.device), mm_token_type_ids=inputs["mm_token_type_ids"].to(self.device),
            image_grid_thw=inputs["image_grid_thw"].to(self.device))
        return positions.cpu()
