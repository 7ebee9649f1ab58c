"""What the engine needs to know about a model family, and the logic every family shares.

An adapter answers three questions about a loaded Hugging Face MLLM: where its decoder layers are,
which input positions hold the visual tokens, and how a prompt is built with the model's own
processor and chat template. Families override only what differs (e.g. Qwen2-VL's 3-D positions).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from PIL import Image

from vfl.errors import VflError

# Processor outputs that describe the text; everything else (pixel values, grids, masks) feeds the image.
TEXT_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}


@dataclass
class Prompt:
    """One tokenised image+question prompt, ready for a prefix/suffix split.

    ``positions`` has shape ``(R, 1, T)``: R = 1 for ordinary RoPE, 3 for multimodal RoPE.
    ``visual_span`` is ``(start, end)``: the first visual token and one past the last one.
    """

    input_ids: torch.Tensor
    image_inputs: dict
    positions: torch.Tensor
    visual_span: tuple[int, int]
    token_inputs: dict = field(default_factory=dict)  # per-token tensors the prefix needs (Gemma 3's token types)

    @property
    def prefix_length(self) -> int:
        """Every token up to and including the last visual token."""
        return self.visual_span[1]

    def same_layout(self, other: "Prompt") -> bool:
        """True when two prompts differ only in the image content (so their caches can be exchanged)."""
        return (self.input_ids.shape == other.input_ids.shape and torch.equal(self.input_ids, other.input_ids)
                and torch.equal(self.positions, other.positions))


class Adapter:
    """Shared behaviour; a family subclass lists its model classes and overrides what differs."""

    family = "base"
    model_classes: tuple[str, ...] = ()
    # How the family writes boxes in answers: "unit" (0-1), "thousand" (0-1000) or "pixel".
    box_format = "unit"
    # Per-token processor outputs the prefill must pass along (sliced to the prefix), e.g. token types
    # that make image tokens attend to each other both ways.
    token_inputs: tuple[str, ...] = ()

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.text_config = model.config.get_text_config()
        self.image_token_id = model.config.image_token_id
        self.eos_token_ids = self._eos_token_ids()
        # transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name warns, and goes in 5.40);
        # 5.23 knows only the old name
        self._cache_keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    # -- where things are -------------------------------------------------------------------------
    @property
    def language_model(self):
        """The decoder stack (a `PreTrainedModel` whose attention implementation can be set alone)."""
        return self.model.model.language_model

    @property
    def decoder_layers(self):
        """The decoder layers, in order (the hidden-state swap hooks their inputs)."""
        return self.language_model.layers

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads per layer (the cache's head axis; fewer than query heads under grouped attention)."""
        return getattr(self.text_config, "num_key_value_heads", None) or self.text_config.num_attention_heads

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def _eos_token_ids(self) -> set[int]:
        """Tokens that end an answer: exactly those the model's `generate` stops at, its generation config's
        (a tokenizer's or text config's end token that the generation config does not list would cut an
        answer short that `generate` continues; none listed: decoding runs to its token limit, as there)."""
        source = self.model.generation_config.eos_token_id
        if source is None:
            return set()
        return set(source if isinstance(source, (list, tuple)) else [source])

    # -- visual features injected into later layers (none by default) --------------------------------
    @contextmanager
    def injected_features_kept(self):
        """Within the block, a forward's injected visual features are appended to the yielded list."""
        yield []

    @contextmanager
    def injected_features_replaced(self, features: list[torch.Tensor], use_b: torch.Tensor):
        """Within the block, row r's injected features k are ``features[k]`` where ``use_b[r, k]``."""
        yield

    # -- prompts ----------------------------------------------------------------------------------
    def chat_text(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        if getattr(self.processor, "chat_template", None) is None:
            raise VflError(f"the processor of this {self.family} model has no chat template")
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def model_image_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The (width, height) the processor resizes an image of ``size`` to, where the family writes boxes in
        those pixels ("pixel"); None where its boxes are relative (then the image's own size is what matters)."""
        return None

    def credit(self, answer: str, image_size: tuple[int, int], scorer: str, target: str, box=None, **rest) -> float:
        """`vfl.metrics.score` of ``answer`` (credit 0-1), boxes read in this family's convention on an image of
        ``image_size``; ``rest``: the scorer's other arguments (other, accepted, choices)."""
        from vfl.metrics import score

        model_size = self.model_image_size(image_size) if scorer == "box-iou" else None
        return score(scorer, answer, target, box, box_format=self.box_format, image_size=image_size,
                     model_size=model_size, **rest)

    def build_prompt(self, image: Image.Image, question: str) -> Prompt:
        return self.prompt(self.processor(images=[image], text=[self.chat_text(question)], return_tensors="pt"))

    def prompt(self, inputs) -> Prompt:
        """A `Prompt` from the processor's output for one image and any text (a question, a conversation)."""
        input_ids = inputs["input_ids"]
        visual = (input_ids[0] == self.image_token_id).nonzero().flatten()
        if len(visual) == 0:
            raise VflError(f"the {self.family} processor put no image token in the prompt")
        image_inputs = {k: v.to(self.device) if torch.is_tensor(v) else v
                        for k, v in inputs.items() if k not in TEXT_KEYS}
        for key, value in image_inputs.items():
            if torch.is_tensor(value) and value.is_floating_point():
                image_inputs[key] = value.to(self.model.dtype)
        return Prompt(input_ids.to(self.device), image_inputs, self.positions(inputs).to(self.device),
                      (int(visual[0]), int(visual[-1]) + 1),
                      {k: inputs[k].to(self.device) for k in self.token_inputs if k in inputs})

    def positions(self, inputs) -> torch.Tensor:
        """Position ids of the whole prompt, shape (R, 1, T)."""
        length = inputs["input_ids"].shape[1]
        return torch.arange(length).view(1, 1, length)

    def cache_inputs(self, cache) -> dict:
        """The forward's keywords that read and extend ``cache``, in the installed transformers' spelling."""
        return {self._cache_keyword: cache, "use_cache": True}

    @staticmethod
    def model_positions(positions: torch.Tensor) -> torch.Tensor:
        """(R, B, T) positions in the form the model's forward takes them."""
        return positions[0] if positions.shape[0] == 1 else positions
