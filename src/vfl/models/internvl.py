"""InternVL (`InternVLForConditionalGeneration`, InternVL2.5/3 in transformers' format): LLaVA-like, the image
as <img><IMG_CONTEXT>...</img>; the context tokens are the visual span. Boxes are written on a 0-1000 grid."""

from vfl.models.base import Adapter


class InternVLAdapter(Adapter):
    family = "internvl"
    model_classes = ("InternVLForConditionalGeneration",)
    box_format = "thousand"
