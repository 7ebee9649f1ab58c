"""nano's training loss: cross-entropy on answer tokens only (the vocabulary projection runs only there), as a
token mean or per-sample means weighted by function, plus the word alignment where asked."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from vfl.nano.align import alignment_loss
from vfl.nano.batches import encoded
from vfl.nano.config import TrainConfig
from vfl.nano.sample import TRAINING_FUNCTIONS
from vfl.training import answer_cross_entropy


def answer_loss(model, ids, labels, attention, features, weights: torch.Tensor | None = None, alignment=None):
    """Cross-entropy on answer tokens, with the image tokens' embeddings given by the projector: the token
    mean over the batch, or with ``weights`` (one per sample) the weighted mean of each sample's token mean.
    ``alignment`` (weight, each token's kind, the kinds' word vectors) adds the weighted `alignment_loss`.
    Returns the loss and, detached, each sample's token mean of the answer (for per-function loss curves)."""
    inner = model.model
    embeds = inner.get_input_embeddings()(ids)
    image = inner.multi_modal_projector(features.to(embeds.dtype))
    mask = (ids == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(mask, image.reshape(-1, image.shape[-1]).to(embeds.dtype))
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
    per_token, per_sample = answer_cross_entropy(labels, lambda chosen: model.lm_head(hidden[:, :-1][chosen]))
    if weights is None:
        loss = per_token.mean()
    else:
        weights = weights.to(per_sample.device)
        loss = (per_sample * weights).sum() / weights.sum().clamp(min=1e-12)
    if alignment is not None:
        weight, kinds, vectors = alignment
        loss = loss + weight * alignment_loss(image, kinds, vectors)
    return loss, per_sample.detach()


def autocast_context(precision: str, device: torch.device):
    """The forward passes' precision context: bf16 autocast on the device, or none (fp32)."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext


def batch_loss(base, config: TrainConfig, batch, device: torch.device, autocast, vectors):
    """(loss, each sample's answer loss, each sample's function index) of one batch: a streamed one (pixels, run
    through the frozen encoder here, and each token's alignment target) or a cached one (features)."""
    if config.data == "stream":
        ids, labels, attention, pixels, functions, kinds = batch
        with autocast():
            features = encoded(base, pixels.to(device, non_blocking=True), config.spec.vision_layers)
        alignment = (config.align_words, kinds.to(device), vectors) if config.align_words else None
    else:
        (ids, labels, attention, features, functions), alignment = batch, None
    weights = None if config.loss_weights is None else \
        torch.tensor([config.loss_weights.get(TRAINING_FUNCTIONS[f], 1.0) for f in functions])
    with autocast():
        loss, per_sample = answer_loss(base, ids.to(device), labels.to(device), attention.to(device),
                                       features.to(device), weights, alignment)
    return loss, per_sample, functions
