"""vfl: find, explain and exploit Vision Function Layers in multimodal LLMs."""

__version__ = "0.1.0"
