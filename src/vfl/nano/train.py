"""`vfl nano train`: train nano's projector (and a LoRA on its language model) on the function suite.

The vision encoder is frozen, so its features are computed once and cached in the run folder. The
loss covers answer tokens only, and the vocabulary projection runs only at those positions. A
checkpoint is written every `--save-every` steps; running the same command again resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from vfl.errors import VflError
from vfl.nano.data import FUNCTIONS, make_sample
from vfl.nano.model import NanoSpec, add_lora, build_untrained


@dataclass
class TrainConfig:
    per_function: int = 1000  # training images per function
    steps: int = 320
    batch_size: int = 16
    lr_projector: float = 1e-3
    lr_lora: float = 1e-4
    warmup: float = 0.03
    lora_start: float = 0.4  # share of the steps trained on the projector alone before the LoRA joins
    seed: int = 0
    save_every: int = 20
    spec: NanoSpec = field(default_factory=NanoSpec)


def token_ids(processor, question: str, answer: str, image_tokens: int) -> tuple[list[int], list[int]]:
    """The prompt exactly as the processor lays it out at inference, then the answer and <|im_end|>."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = prompt.replace("<image>", "<image>" * image_tokens)
    prompt_ids = processor.tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = processor.tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


@torch.inference_mode()
def vision_features(model, processor, images, layers: list[int], batch: int = 32) -> torch.Tensor:
    """Pre-projector features of the configured encoder layer(s), (N, tokens, width), float16."""
    tower = model.model.vision_tower
    chunks = []
    for i in tqdm(range(0, len(images), batch), desc="vision features", unit="batch"):
        pixels = processor.image_processor(images[i:i + batch], return_tensors="pt")["pixel_values"]
        hidden = tower(pixels).hidden_states
        chunks.append(torch.cat([hidden[k] for k in layers], dim=-1).to(torch.float16))
    return torch.cat(chunks)


def training_set(model, processor, per_function: int, seed: int, layers: list[int]) -> dict:
    """Token ids, labels and the encoder layers' concatenated features of the training samples."""
    samples = [make_sample(f, i, seed) for f in FUNCTIONS for i in range(per_function)]
    features = vision_features(model, processor, [s.image for s in samples], layers)
    tokens = [token_ids(processor, s.question, s.answer, features.shape[1]) for s in samples]
    return {"ids": [t[0] for t in tokens], "labels": [t[1] for t in tokens], "features": features}


def cached(path: Path, build) -> dict:
    """``torch.load(path)``, or ``build()`` saved there atomically first."""
    if path.exists():
        return torch.load(path)
    data = build()
    torch.save(data, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return data


def _data(run: Path, model, processor, config: TrainConfig):
    """The training set, built once per run folder."""
    return cached(run / "data.pt", lambda: training_set(model, processor, config.per_function, config.seed,
                                                         config.spec.vision_layers))


def answer_loss(model, ids, labels, attention, features) -> torch.Tensor:
    """Cross-entropy on answer tokens, with the image tokens' embeddings given by the projector."""
    inner = model.model
    embeds = inner.get_input_embeddings()(ids)
    image = inner.multi_modal_projector(features.to(embeds.dtype))
    mask = (ids == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(mask, image.reshape(-1, image.shape[-1]))
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]
    chosen = targets != -100
    logits = model.lm_head(hidden[:, :-1][chosen])
    return torch.nn.functional.cross_entropy(logits.float(), targets[chosen])


def _batch(data, order: list[int], pad_id: int):
    ids = [data["ids"][i] for i in order]
    labels = [data["labels"][i] for i in order]
    width = max(len(x) for x in ids)
    tensor = torch.full((len(ids), width), pad_id, dtype=torch.long)
    label_tensor = torch.full((len(ids), width), -100, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (x, y) in enumerate(zip(ids, labels)):
        tensor[row, : len(x)], label_tensor[row, : len(y)], attention[row, : len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return tensor, label_tensor, attention, data["features"][order]


def _schedules(config: TrainConfig):
    """Learning-rate factors of the projector and the LoRA: warmup then cosine; the LoRA is held at zero
    for the first `lora_start` share of the steps, so the language model cannot learn to answer from
    priors alone before the projector carries the image."""
    warmup = max(1, int(config.warmup * config.steps))
    lora_from = int(config.lora_start * config.steps)

    def projector(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def lora(step: int) -> float:
        return 0.0 if step < lora_from else projector(step)

    return [projector, lora]


def trainable_state(base, peft_model) -> tuple[dict, dict]:
    """Projector weights, and the LoRA's in PEFT's own naming (empty without a LoRA)."""
    from peft import get_peft_model_state_dict

    projector = {k: v.detach().clone() for k, v in base.model.multi_modal_projector.state_dict().items()}
    if peft_model is None:
        return projector, {}
    return projector, {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def train(run: Path, config: TrainConfig, data: dict | None = None) -> Path:
    """Train into ``run`` (resuming from its checkpoint) and return the folder of the shipped weights.
    ``data`` (ids, labels, features) replaces the run's own cached training set, e.g. features shared
    by several variants."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    settings = run / "train.json"
    if settings.exists() and json.loads(settings.read_text()) != json.loads(json.dumps(asdict(config))):
        raise VflError(f"{run} holds a training run with other settings; use another --out")
    settings.write_text(json.dumps(asdict(config), indent=2) + "\n")
    torch.manual_seed(config.seed)
    base, processor = build_untrained(config.spec, config.seed)
    data = data if data is not None else _data(run, base, processor, config)
    peft_model = add_lora(base, config.spec) if config.spec.lora_rank else None  # injects into `base`
    model = peft_model or base
    projector = base.model.multi_modal_projector
    for parameter in projector.parameters():
        parameter.requires_grad_(True)
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    optimizer = torch.optim.AdamW([{"params": list(projector.parameters()), "lr": config.lr_projector},
                                   {"params": lora, "lr": config.lr_lora}], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedules(config))
    step, losses = 0, []
    checkpoint = run / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        projector.load_state_dict(state["projector"])
        model.load_state_dict(state["lora"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses = state["step"], state["losses"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
    n = len(data["ids"])
    pad = processor.tokenizer.pad_token_id or 0
    model.train()
    started = time.time()
    with tqdm(total=config.steps, initial=step, desc="nano train", unit="step", dynamic_ncols=True) as bar:
        while step < config.steps:
            epoch, offset = divmod(step * config.batch_size, n)
            order = list(range(n))
            random.Random(config.seed * 1000 + epoch).shuffle(order)
            picked = [order[(offset + i) % n] for i in range(config.batch_size)]
            ids, labels, attention, features = _batch(data, picked, pad)
            loss = answer_loss(base, ids, labels, attention, features)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(projector.parameters()) + lora, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(round(loss.item(), 4))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            bar.update(1)
            if step % config.save_every == 0 or step == config.steps:
                proj_state, _ = trainable_state(base, peft_model)
                torch.save({"projector": proj_state, "lora": {k: v for k, v in model.state_dict().items()
                                                              if "lora_" in k},
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "step": step, "losses": losses, "python_rng": random.getstate(),
                            "torch_rng": torch.get_rng_state()}, checkpoint.with_suffix(".tmp"))
                os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    weights = run / "weights"
    weights.mkdir(exist_ok=True)
    proj_state, lora_state = trainable_state(base, peft_model)
    save_file({k: v.to(torch.float16).contiguous() for k, v in proj_state.items()}, str(weights / "projector.safetensors"))
    if lora_state:
        save_file({k: v.to(torch.float16).contiguous() for k, v in lora_state.items()}, str(weights / "lora.safetensors"))
    (weights / "spec.json").write_text(json.dumps(asdict(config.spec), indent=2) + "\n")
    (run / "losses.json").write_text(json.dumps(losses) + "\n")
    print(f"trained {config.steps} steps in {time.time() - started:.0f} s (this session); weights in {weights}")
    return weights


def ship(weights: Path, target: Path) -> None:
    """Replace the package's weights with a run's: projector, LoRA if any, spec, and the run's settings
    (train.json) and loss curve, so that the shipped model says how to retrain it."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.safetensors"):
        old.unlink()
    for source in (weights / "projector.safetensors", weights / "lora.safetensors", weights / "spec.json",
                   weights.parent / "train.json", weights.parent / "losses.json"):
        if source.exists():
            shutil.copy2(source, target / source.name)
