"""`nano`'s vision tower: DINOv2 whose per-layer patch tokens are pixel-shuffled 2x2.

At 224 px DINOv2-S/14 gives 16x16 patches; folding each 2x2 block into one token (4 x 384 features)
keeps the encoder's full resolution while the language model sees only 64 visual tokens, as in
SmolVLM / nanoVLM. Every exported layer passes through DINOv2's own final LayerNorm first (as DINOv2's
`get_intermediate_layers(norm=True)` does): raw layers differ in scale by 20x (std 0.1 at layer 6, 2.4
at layer 12, outlier channels near 21), which let a projector trained on them blow up and drown the
image. It is registered with transformers' Auto classes, so `LlavaForConditionalGeneration` builds and
loads it like any vision tower and picks `vision_feature_layer` from its hidden states (index k = the
output of encoder layer k; 0 = the embeddings).
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, Dinov2Config, Dinov2Model, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vfl.nano.parts import DINOV2_S


class NanoVisionConfig(PreTrainedConfig):
    model_type = "vfl_nano_vision"

    def __init__(self, encoder: dict | None = None, shuffle: int = 2, **kwargs):
        self.encoder = dict(encoder or DINOV2_S)
        self.shuffle = shuffle
        # The width one encoder layer contributes to the projector, after the shuffle.
        kwargs["hidden_size"] = self.encoder["hidden_size"] * shuffle * shuffle
        kwargs.setdefault("num_hidden_layers", self.encoder["num_hidden_layers"])
        super().__init__(**kwargs)


def pixel_shuffle(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, H*W, C) patch tokens -> (B, H*W/factor^2, C*factor^2): each factor x factor block becomes one token."""
    batch, count, channels = tokens.shape
    side = int(count ** 0.5)
    grid = tokens.view(batch, side // factor, factor, side // factor, factor, channels)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(batch, (side // factor) ** 2, factor * factor * channels)


class NanoVisionModel(PreTrainedModel):
    config_class = NanoVisionConfig
    main_input_name = "pixel_values"
    base_model_prefix = "nano_vision"
    _supports_sdpa = True

    def __init__(self, config: NanoVisionConfig):
        super().__init__(config)
        self.encoder = Dinov2Model(Dinov2Config(**config.encoder))
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=True)
        norm = self.encoder.layernorm
        hidden = tuple(pixel_shuffle(norm(h)[:, 1:], self.config.shuffle) for h in out.hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=hidden[-1], hidden_states=hidden)


AutoConfig.register(NanoVisionConfig.model_type, NanoVisionConfig)
AutoModel.register(NanoVisionConfig, NanoVisionModel)
