"""Tiny randomly initialised MLLMs of every supported family, built from configs alone.

Tests, the benchmark and the fallback demo need real model classes with real processors but
no downloads; these builders give exactly that (a byte-level tokenizer, the family's own image
processor and chat-template layout, random weights seeded for determinism).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vfl.models.processors import image_only

FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm",
            "internvl", "gemma3")
GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>"}
TINY_LAYERS, TINY_KV_HEADS = 4, 2  # a tiny model's decoder layers and key/value heads unless asked otherwise

_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
]

CHAT_TEMPLATES = {
    # LLaVA-1.5 layout: "USER: <image>\n{question} ASSISTANT:"
    "llava": (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        " {% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
    # Qwen2-VL layout: ChatML with <|vision_start|><|image_pad|><|vision_end|>
    "qwen": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # InternVL: ChatML with a context token the processor expands to <img><IMG_CONTEXT>...</img>
    "internvl": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Gemma 3: ChatML here; the processor expands <start_of_image> to the image's soft tokens
    "gemma3": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Idefics3 / SmolVLM layout: "User:<image>{question}<end_of_utterance>\nAssistant:"
    "idefics3": (
        "{% for m in messages %}{{ m['role'] | capitalize }}:"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
}


def tiny_tokenizer(named: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + the families' special tokens), built offline. ``named``
    adds special tokens that a processor reads by attribute (InternVL's ``start_image_token`` ...)."""
    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   **({"extra_special_tokens": named} if named else {}))
    fast.add_special_tokens({"additional_special_tokens": _SPECIAL[1:]})
    fast.add_tokens([f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)], special_tokens=True)
    return fast


def _text_config(kind: str, tok, layers: int, hidden: int, heads: int, kv_heads: int, **extra) -> dict:
    return dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        eos_token_id=tok.convert_tokens_to_ids(extra.pop("eos", "<|endoftext|>")), pad_token_id=tok.pad_token_id,
        bos_token_id=None, tie_word_embeddings=False, initializer_range=0.2, **extra,
    )


def build_tiny(family: str, num_layers: int = TINY_LAYERS, hidden: int = 64, heads: int = 4, kv_heads: int = TINY_KV_HEADS,
               image_size: int = 32, patch: int = 8, vision_layers: int = 2, vision_hidden: int = 32,
               seed: int = 0, dtype: torch.dtype = torch.float32):
    """Return ``(model, processor)`` of ``family`` with random weights (std 0.2, so images matter)."""
    from transformers import AutoModelForImageTextToText

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    tok = tiny_tokenizer({"internvl": INTERNVL_TOKENS, "gemma3": GEMMA3_TOKENS}.get(family))
    # Seed 0 gives a tiny LLaVA-NeXT whose single-layer swaps change no answer on the test probes (its
    # answers hardly depend on the image), which would leave the engine's comparisons vacuous.
    torch.manual_seed(seed + (1 if family == "llava_next" else 0))
    vision = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
                  num_attention_heads=2, initializer_range=0.2)
    config, processor = BUILDERS[family](family, tok, num_layers, hidden, heads, kv_heads, image_size, patch,
                                         vision_layers, vision_hidden, vision)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    if family == "gemma3":  # Gemma 3 starts its image projection at zero, which would hide the image
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, processor


def _llava(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
           vision):
    """LLaVA: a CLIP tower, patch tokens and a CLS."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaProcessor

    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=image_size, patch_size=patch,
                           projection_dim=vision_hidden, **vision),
        text_config=dict(model_type="llama", **_text_config("llama", tok, num_layers, hidden, heads, kv_heads)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), projector_hidden_act="gelu",
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATES["llava"],
                               num_additional_image_tokens=1)
    return config, processor


def _llava_any_resolution(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
                          vision):
    """LLaVA-NeXT and LLaVA-OneVision: a base view and tiles."""
    # Any-resolution: a base view plus tiles of the best-fitting grid, with newline embeddings between
    # rows; every position of that layout is an image token, so the visual span covers it whole.
    import transformers

    name = {"llava_next": "LlavaNext", "llava_onevision": "LlavaOnevision"}[family]
    vision_config = dict(model_type="clip_vision_model" if family == "llava_next" else "siglip_vision_model",
                         image_size=image_size, patch_size=patch, **vision)
    config = getattr(transformers, f"{name}Config")(
        vision_config=vision_config,
        text_config=dict(model_type="llama" if family == "llava_next" else "qwen2",
                         **_text_config("llama", tok, num_layers, hidden, heads, kv_heads)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), projector_hidden_act="gelu",
        vision_feature_layer=-1, vision_feature_select_strategy="default" if family == "llava_next" else "full",
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size]],
    )
    image_processor = getattr(transformers, f"{name}ImageProcessorPil")(
        size={"shortest_edge": image_size} if family == "llava_next" else {"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size]])
    extra = dict(num_additional_image_tokens=1) if family == "llava_next" else dict(num_image_tokens=(image_size // patch) ** 2)
    processor_class = getattr(transformers, f"{name}Processor")
    if family == "llava_onevision":
        processor_class = image_only(processor_class)
    processor = processor_class(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                                vision_feature_select_strategy=config.vision_feature_select_strategy,
                                chat_template=CHAT_TEMPLATES["llava"], **extra)
    return config, processor


def _qwen_vl(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
             vision):
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL: merged patches, 3-D RoPE (Qwen3-VL: DeepStack)."""
    from transformers import Qwen2VLImageProcessorPil

    head_dim = hidden // heads
    quarter = head_dim // 4
    text = _text_config("qwen2", tok, num_layers, hidden, heads, kv_heads, eos="<|im_end|>",
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]})
    ids = dict(image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
               video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
               vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
               vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    qv = dict(depth=vision_layers, num_heads=2, patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
              initializer_range=0.2)
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config, Qwen2VLProcessor as Processor

        vconf = dict(embed_dim=vision_hidden, hidden_size=hidden, mlp_ratio=2, **qv)
    elif family == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config, Qwen3VLProcessor as Processor

        text["rope_parameters"]["mrope_interleaved"] = True
        text["head_dim"] = head_dim
        # DeepStack: every vision layer's features are injected after the language model's first layers
        vconf = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, out_hidden_size=hidden,
                     num_position_embeddings=(image_size // patch) ** 2,
                     deepstack_visual_indexes=list(range(vision_layers)), **qv)
    else:
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLProcessor as Processor

        vconf = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, out_hidden_size=hidden,
                     window_size=2 * patch * 2, fullatt_block_indexes=[vision_layers - 1], **qv)
    config = Config(text_config=dict(model_type=family + "_text", **text), vision_config=vconf,
                    **({"tie_word_embeddings": False} if family == "qwen3_vl" else {}), **ids)
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                               min_pixels=pixels, max_pixels=pixels)
    processor = image_only(Processor)(image_processor=image_processor, tokenizer=tok,
                                          video_processor=None, chat_template=CHAT_TEMPLATES["qwen"])
    return config, processor


def _gemma3(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
            vision):
    """Gemma 3: soft image tokens, sliding and global layers."""
    from transformers import Gemma3Config, Gemma3ImageProcessorPil, Gemma3Processor

    text = _text_config("gemma3", tok, num_layers, hidden, heads, kv_heads, eos="<|im_end|>")
    text.update(head_dim=hidden // heads, query_pre_attn_scalar=hidden // heads, sliding_window=512,
                layer_types=["sliding_attention" if k % 2 == 0 else "full_attention" for k in range(num_layers)])
    tokens_per_image = (image_size // patch) ** 2 // 4
    config = Gemma3Config(
        text_config=dict(model_type="gemma3_text", **text),
        vision_config=dict(model_type="siglip_vision_model", image_size=image_size, patch_size=patch, **vision),
        mm_tokens_per_image=tokens_per_image, boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id, initializer_range=0.2, tie_word_embeddings=False,
    )
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size},
                                                                      do_pan_and_scan=False),
                                tokenizer=tok, chat_template=CHAT_TEMPLATES["gemma3"], image_seq_length=tokens_per_image)
    return config, processor


def _internvl(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
              vision):
    """InternVL: <IMG_CONTEXT> tokens."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLProcessor

    config = InternVLConfig(
        vision_config=dict(model_type="internvl_vision", hidden_size=vision_hidden, num_hidden_layers=vision_layers,
                           num_attention_heads=2, intermediate_size=2 * vision_hidden, image_size=[image_size] * 2,
                           patch_size=[patch] * 2, initializer_range=0.2),
        text_config=dict(model_type="qwen2", **_text_config("qwen2", tok, num_layers, hidden, heads, kv_heads,
                                                            eos="<|im_end|>")),
        image_token_id=tok.context_image_token_id, image_seq_length=(image_size // patch) ** 2 // 4,
        downsample_ratio=0.5, vision_feature_layer=-1, tie_word_embeddings=False,
    )
    image_processor = GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size},
                                               crop_to_patches=False)
    processor = image_only(InternVLProcessor)(image_processor=image_processor, tokenizer=tok, video_processor=None,
                                              image_seq_length=config.image_seq_length,
                                              chat_template=CHAT_TEMPLATES["internvl"])
    return config, processor


def _idefics3(family, tok, num_layers, hidden, heads, kv_heads, image_size, patch, vision_layers, vision_hidden,
              vision):
    """Idefics3 and SmolVLM: one unsplit image."""
    from transformers import Idefics3ImageProcessorPil

    if family == "idefics3":
        from transformers import Idefics3Config as Config, Idefics3Processor as Processor
    else:
        # SmolVLM's own processor cannot be built without torchvision; Idefics3's lays out a
        # single unsplit image the same way.
        from transformers import Idefics3Processor as Processor, SmolVLMConfig as Config
    config = Config(
        vision_config=dict(image_size=image_size, patch_size=patch, **vision),
        text_config=dict(model_type="llama", **_text_config("llama", tok, num_layers, hidden, heads, kv_heads,
                                                             eos="<end_of_utterance>")),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                                max_image_size={"longest_edge": image_size})
    processor = Processor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATES["idefics3"],
                          image_seq_len=(image_size // patch) ** 2 // 4)
    return config, processor


BUILDERS = {family: builder for builder, names in (
    (_llava, ("llava",)), (_llava_any_resolution, ("llava_next", "llava_onevision")),
    (_qwen_vl, ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")), (_gemma3, ("gemma3",)), (_internvl, ("internvl",)),
    (_idefics3, ("idefics3", "smolvlm"))) for family in names}
