"""Processors for images alone. The Qwen-VL, LLaVA-OneVision and InternVL processors insist on a video processor, which transformers
5.23 can build only with torchvision; vfl feeds images only, so without torchvision it builds these
processors from their image processor, tokenizer and chat template, and saves them the same way."""

from __future__ import annotations

import json
from pathlib import Path

from vfl.errors import VflError

IMAGE_ONLY = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
              "qwen3_vl": "Qwen3VLProcessor", "llava_onevision": "LlavaOnevisionProcessor",
              "internvl": "InternVLProcessor"}
TEMPLATE_FILE = "chat_template.jinja"
SETTINGS_FILE = "processor_config.json"  # the processor's own settings (e.g. tokens per image)
PARTS = ("tokenizer", "image_processor", "video_processor", "processor_class")


def image_only(processor_class):
    """``processor_class`` accepting a missing video processor, and saving the parts it has."""

    class ImageOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory, **kwargs):
            if self.video_processor is not None:
                return super().save_pretrained(save_directory, **kwargs)
            folder = Path(save_directory)
            folder.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(folder)
            self.image_processor.save_pretrained(folder)
            if isinstance(self.chat_template, str):
                (folder / TEMPLATE_FILE).write_text(self.chat_template, encoding="utf-8")
            settings = {k: v for k, v in self.to_dict().items() if k not in PARTS}
            (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
            return [str(folder)]

    ImageOnly.__name__ = processor_class.__name__
    return ImageOnly


def load_processor(spec: str, model_type: str, local_only: bool = True):
    """``AutoProcessor`` for ``spec``; for the families in IMAGE_ONLY, an image-only processor where the
    video processor cannot be built (no torchvision)."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(spec, local_files_only=local_only)
    except (ImportError, ValueError) as err:  # transformers says "requires torchvision" either way
        if model_type not in IMAGE_ONLY or "torchvision" not in str(err).lower():
            raise VflError(f"cannot build the processor of {spec!r} ({str(err).strip().splitlines()[0]})") from None
    tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=local_only)
    template, saved = Path(spec) / TEMPLATE_FILE, Path(spec) / SETTINGS_FILE
    chat_template = template.read_text(encoding="utf-8") if template.is_file() else tokenizer.chat_template
    settings = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    processor_class = image_only(getattr(transformers, IMAGE_ONLY[model_type]))
    return processor_class(image_processor=AutoImageProcessor.from_pretrained(spec, local_files_only=local_only),
                           tokenizer=tokenizer, video_processor=None, chat_template=chat_template,
                           **{k: v for k, v in settings.items() if k not in PARTS})
