"""Qwen3-VL: Qwen2-VL's multimodal RoPE, plus DeepStack: the vision tower's intermediate features are added
to the visual positions' hidden states after each of the first language-model layers. A key/value swap
needs nothing more (those additions are already in each layer's keys and values), but a hidden-state swap
would leave A's additions in place, so this adapter can capture B's and put them into chosen rows, through
a forward hook on the vision tower (its output's ``deepstack_features``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from vfl.models.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_classes = ("Qwen3VLForConditionalGeneration",)
    box_format = "thousand"

    @contextmanager
    def _vision_hook(self, hook):
        handle = self.model.model.visual.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def injected_features_kept(self):
        kept = []

        def keep(module, args, output):
            kept.extend(feature.detach().clone() for feature in output.deepstack_features)

        with self._vision_hook(keep):
            yield kept

    @contextmanager
    def injected_features_replaced(self, features: list[torch.Tensor], use_b: torch.Tensor):
        rows = use_b.shape[0]

        def replace(module, args, output):
            mixed = []
            for k, feature in enumerate(output.deepstack_features):
                per_row = feature.view(rows, -1, feature.shape[-1])  # the rows' images, in order
                take = use_b[:, k].view(-1, 1, 1).to(feature.device)
                mixed.append(torch.where(take, features[k].to(feature.dtype).unsqueeze(0), per_row).flatten(0, 1))
            output.deepstack_features = mixed
            return output

        with self._vision_hook(replace):
            yield
