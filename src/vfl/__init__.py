"""vfl: find, explain and exploit Vision Function Layers in multimodal LLMs.

    import vfl
    result = vfl.locate(model, processor, vfl.make_probes(["count"], n=20))

The public names load their modules on first use, so `import vfl` stays light (no torch).
"""

import warnings
from importlib import import_module

# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` on every LoRA wrap; the warning is theirs
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

__version__ = "0.2.0"

_PUBLIC = {
    "locate": "vfl.api", "drop": "vfl.api", "make_probes": "vfl.api", "LocateResult": "vfl.api",
    "DropResult": "vfl.api", "load_probes": "vfl.probes.schema", "Probe": "vfl.probes.schema",
    "load": "vfl.models", "VflError": "vfl.errors", "Intervention": "vfl.interventions",
    "probes_from": "vfl.probes.benchmarks",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        if callable(value) and not isinstance(value, type):  # functions; not the classes
            from vfl.errors import in_python_terms

            value = in_python_terms(value)
        return value
    raise AttributeError(f"module 'vfl' has no attribute {name!r}")
