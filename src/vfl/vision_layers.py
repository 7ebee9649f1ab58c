"""Which encoder layers are alike: per-layer similarity (cosine, linear CKA) and shallow/middle/deep groups.

For every layer of a vision encoder, the patch-token representations of a set of images; two matrices
over layer pairs:
* cosine: the mean cosine similarity of the same token's vectors in the two layers;
* linear CKA (Kornblith et al. 2019): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on centred token
  matrices, invariant to rotations and isotropic scaling of either layer's features.
Grouping rule: each layer is described by its row of the CKA matrix; the three contiguous blocks are the
split that minimises the within-block sum of squared distances to the block's mean row (an exhaustive
search over all splits, so the result is the optimum, not a heuristic).
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image

from vfl.errors import VflError

GROUP_NAMES = ("shallow", "middle", "deep")


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two (samples, features) matrices."""
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()))


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean())


def similarity_matrices(states: list[torch.Tensor]) -> tuple[list[list[float]], list[list[float]]]:
    """Cosine and CKA matrices over layers; ``states[l]`` is (samples, features) for layer l."""
    count = len(states)
    cosine = [[1.0] * count for _ in range(count)]
    cka = [[1.0] * count for _ in range(count)]
    for i, j in combinations(range(count), 2):
        cosine[i][j] = cosine[j][i] = mean_cosine(states[i], states[j]) if states[i].shape == states[j].shape else float("nan")
        cka[i][j] = cka[j][i] = linear_cka(states[i], states[j])
    return cosine, cka


def group_layers(similarity: list[list[float]], groups: int = 3) -> list[list[int]]:
    """Contiguous blocks of layer indices (0-based) minimising within-block scatter of similarity rows."""
    rows = torch.tensor(similarity, dtype=torch.float64)
    count = rows.shape[0]
    if count < groups:
        raise VflError(f"{count} layers cannot form {groups} groups")

    def scatter(start: int, end: int) -> float:
        block = rows[start:end]
        return float((block - block.mean(0)).pow(2).sum())

    best = None
    for cuts in combinations(range(1, count), groups - 1):
        bounds = (0, *cuts, count)
        cost = sum(scatter(a, b) for a, b in zip(bounds, bounds[1:]))
        if best is None or cost < best[0] - 1e-12:
            best = (cost, bounds)
    bounds = best[1]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def load_encoder(spec: str, download: bool = False, dtype: str = "auto", device: str = "cpu"):
    """(encoder, image processor) for ``nano`` or ``nano:DIR`` (its DINOv2), a vision model (CLIP, SigLIP, DINOv2;
    the image side of a dual encoder) or a supported MLLM (its vision tower, found by transformers'
    ``get_encoder(modality="image")``). A hub id is read from the local cache only, unless ``download``."""
    from vfl.models import SUPPORTED, check_device, checkpoint_config, load, nano_weights, torch_dtype

    check_device(device)
    resolved = torch_dtype(dtype, device)
    if nano_weights(spec) is not None:  # nano or nano:DIR: every nano reads the same frozen, packaged DINOv2
        from transformers import CLIPImageProcessorPil

        from vfl.nano.config import IMAGE_SIZE
        from vfl.nano.model import IMAGENET_MEAN, IMAGENET_STD
        from vfl.nano.parts import dinov2

        processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                          image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        return dinov2().to(device, torch.float32 if resolved == "auto" else resolved), processor
    if spec.startswith("tiny:") or \
            set(checkpoint_config(spec, download).architectures or []) & set(SUPPORTED):
        adapter = load(spec, dtype, device, download=download)
        return adapter.model.get_encoder(modality="image"), adapter.processor.image_processor
    from transformers import AutoImageProcessor, AutoModel

    local_only = not (download or os.path.isdir(spec))
    try:
        model = AutoModel.from_pretrained(spec, dtype=resolved, local_files_only=local_only).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(spec, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as err:  # weights or preprocessor_config.json missing, not a vision model
        raise VflError(f"cannot load encoder {spec!r}: {str(err).strip().splitlines()[0][:300]}") from None
    return model.get_encoder(modality="image"), processor


def encoder_inputs(processor, images: list[Image.Image]) -> dict:
    """The encoder's keyword inputs for ``images``: pixels (an image-splitting processor's crops each count as an
    image, its all-zero padding crops dropped), or a Qwen-VL tower's flattened patches and their grids."""
    batch = processor(images, return_tensors="pt")
    pixels = batch["pixel_values"]
    if "image_grid_thw" in batch:
        return {"hidden_states": pixels, "grid_thw": batch["image_grid_thw"]}
    if pixels.dim() == 5:
        pixels = pixels.flatten(0, 1)
        pixels = pixels[pixels.flatten(1).any(1)]
    return {"pixel_values": pixels}


@torch.inference_mode()
def layer_states(encoder, processor, images: list[Image.Image], max_rows: int = 4096, seed: int = 0):
    """Per layer (1..L), a (rows, features) matrix of patch tokens, the same sampled tokens in every layer."""
    collected = None
    for start in range(0, len(images), 16):
        inputs = encoder_inputs(processor, images[start:start + 16])
        first = next(encoder.parameters())  # its device and dtype: pixels follow both, grids the device only
        inputs = {k: v.to(first.device, first.dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        hidden = [h.float().cpu() for h in encoder(**inputs, output_hidden_states=True).hidden_states[1:]]
        if hidden[0].dim() == 3:  # (images, tokens, features); CLS / register tokens come before the square grid
            tokens = hidden[0].shape[1]
            hidden = [h[:, tokens - int(tokens ** 0.5) ** 2:] for h in hidden]
        flat = [h.reshape(-1, h.shape[-1]) for h in hidden]  # a Qwen-VL tower's (patches, features) as they are
        collected = flat if collected is None else [torch.cat([a, b]) for a, b in zip(collected, flat)]
    rows = collected[0].shape[0]
    if rows > max_rows:
        keep = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[:max_rows]
        collected = [c[keep] for c in collected]
    return collected


def analyse(spec: str, images: list[Image.Image], out: Path, download: bool = False, dtype: str = "auto",
            device: str = "cpu") -> dict:
    """Write similarity.json, groups.json and heatmap.png into ``out``; return the groups record."""
    if not images:
        raise VflError("no images to analyse")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder, processor = load_encoder(spec, download, dtype, device)
    states = layer_states(encoder, processor, images)
    cosine, cka = similarity_matrices(states)
    blocks = group_layers(cka)
    layers = list(range(1, len(states) + 1))
    groups = {name: [layers[i] for i in block] for name, block in zip(GROUP_NAMES, blocks)}
    record = {"encoder": spec, "layers": layers, "images": len(images), "metric": "linear CKA",
              "rule": "contiguous 3-way split of the layers minimising the within-group sum of squared distances "
                      "between each layer's CKA row and its group's mean row (exhaustive search)",
              "groups": groups,
              "representatives": {name: members[len(members) // 2] for name, members in groups.items()}}
    (out / "similarity.json").write_text(json.dumps({"layers": layers, "cosine": cosine, "cka": cka}) + "\n")
    (out / "groups.json").write_text(json.dumps(record, indent=2) + "\n")
    _heatmap(out / "heatmap.png", spec, layers, cosine, cka, blocks)
    return record


def _heatmap(path: Path, spec: str, layers, cosine, cka, blocks) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=120)
    for ax, matrix, title in ((axes[0], cosine, "mean token cosine"), (axes[1], cka, "linear CKA")):
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set(title=title, xlabel="layer", ylabel="layer", xticks=range(len(layers)), yticks=range(len(layers)))
        ax.set_xticklabels(layers, fontsize=7)
        ax.set_yticklabels(layers, fontsize=7)
        for block in blocks[1:]:
            edge = block[0] - 0.5
            ax.axhline(edge, color="white", lw=1.5)
            ax.axvline(edge, color="white", lw=1.5)
        fig.colorbar(image, ax=ax, fraction=0.046)
    names = ", ".join(f"{n} {layers[b[0]]}-{layers[b[-1]]}" for n, b in zip(GROUP_NAMES, blocks))
    fig.suptitle(f"{spec}: layer similarity ({names})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
