"""Assemble `nano`: DINOv2-S (pixel-shuffled) -> MLP projector -> SmolLM2-135M-Instruct, as a
`LlavaForConditionalGeneration`, so every adapter and the whole engine apply unchanged.

Only the projector (and a LoRA on the language model) are trained by us; they ship in
`vfl/nano/weights/` and are merged in at first use; the assembled model is cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from vfl.errors import VflError
from vfl.nano import parts
from vfl.nano.vision import NanoVisionConfig
from vfl.nano.config import IMAGE_SIZE, PATCH_PX, NanoSpec

WEIGHTS = Path(__file__).parent / "weights"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LORA_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def build_processor(tokenizer, shuffle: int = 2):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    # (224 / (14 * shuffle))^2 tokens, no CLS: 64 with the 2x2 shuffle.
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_PX * shuffle,
                          vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=0)


def build_untrained(spec: NanoSpec, seed: int = 0):
    """The assembled model with the pretrained parts loaded and a freshly initialised projector."""
    from transformers import AutoConfig, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    lm_dir = parts.smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text_config = AutoConfig.from_pretrained(lm_dir)
    text_config.vocab_size = len(tokenizer)
    layers = spec.vision_layers
    bad = [k for k in layers if not 0 <= k <= parts.DINOV2_S["num_hidden_layers"]]
    if bad or not layers:
        raise VflError(f"vision layer {bad[0] if bad else '(none)'} does not exist: DINOv2-S has layers 1..12 "
                       "(0 = the patch embeddings)")
    config = LlavaConfig(
        vision_config=NanoVisionConfig(shuffle=spec.shuffle), text_config=text_config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=layers[0] if len(layers) == 1 else list(layers),
        vision_feature_select_strategy="full", projector_hidden_act="gelu", tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.encoder.load_state_dict(parts.dinov2().state_dict())
    lm_state = load_file(str(lm_dir / "model.safetensors"))
    embed = lm_state.pop("model.embed_tokens.weight")
    lm_state.pop("lm_head.weight", None)
    language_model = model.model.language_model
    missing, unexpected = language_model.load_state_dict(
        {k[len("model."):]: v for k, v in lm_state.items()}, strict=False)
    if unexpected or set(missing) != {"embed_tokens.weight"}:
        raise VflError(f"SmolLM2 weights do not fit the language model (missing {missing}, extra {unexpected})")
    with torch.no_grad():
        table = language_model.embed_tokens.weight
        table.zero_()
        table[: embed.shape[0]] = embed  # the new <image> row stays zero: it is never read as input
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.eval()
    return model, build_processor(tokenizer, spec.shuffle)


def add_lora(model, spec: NanoSpec):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0,
                                            target_modules=LORA_TARGETS))


def apply_trained(model, spec: NanoSpec, weights: Path):
    """Load the trained projector and merge the trained LoRA into the language model."""
    peft_model = add_lora(model, spec) if (weights / "lora.safetensors").exists() else None
    load_trained(model, peft_model, weights)
    return (peft_model.merge_and_unload() if peft_model is not None else model).eval()


def load_trained(model, peft_model, weights: Path) -> None:
    """A run's trained weights, unmerged: the projector and a full fine-tune's language model into ``model``, the
    LoRA into ``peft_model`` (``model`` wrapped by `add_lora`)."""
    model.model.multi_modal_projector.load_state_dict(load_file(str(weights / "projector.safetensors")))
    language_file = weights / "language_model.safetensors"  # a full fine-tune (not shippable, loadable)
    if language_file.exists():
        model.model.language_model.load_state_dict(load_file(str(language_file)))
    lora_file = weights / "lora.safetensors"
    if lora_file.exists():
        if peft_model is None:
            raise VflError(f"{weights} holds a LoRA, but the model it is loaded into has none (--lora-rank 0)")
        load_lora(peft_model, lora_file)


def load_lora(peft_model, lora_file: Path) -> None:
    """A trained LoRA into ``peft_model`` (a model wrapped by `add_lora` with the same rank)."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, load_file(str(lora_file)))
    if result.unexpected_keys:
        raise VflError(f"{lora_file} does not fit nano's LoRA ({result.unexpected_keys[:3]} ...)")


def load_nano(weights: Path = WEIGHTS, dtype=torch.float32, device: str = "cpu"):
    """The trained `nano` (model, processor), assembled from the packaged parts. The shipped weights are
    assembled once and cached (later loads take under a second); other weights, a training run's, are
    assembled at each load (about 9 s on 2 CPU cores), so comparing recipes fills no disk."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    spec_file = weights / "spec.json"
    if not spec_file.exists():
        raise VflError(f"no trained nano weights in {weights}; train them with `vfl nano train`")
    spec = NanoSpec(**json.loads(spec_file.read_text()))
    if Path(weights).resolve() != WEIGHTS.resolve():
        model, processor = build_untrained(spec)
        return apply_trained(model, spec, weights).to(device=device, dtype=dtype), processor
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(weights.glob("*.safetensors")))).hexdigest()[:10]
    path = parts.cache_dir() / f"nano-{spec.key()}-{digest}"
    if not (path / "config.json").exists():
        model, processor = build_untrained(spec)
        model = apply_trained(model, spec, weights)

        def save(folder: Path) -> None:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)

        parts.save_atomically(path, save)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoProcessor.from_pretrained(path)
