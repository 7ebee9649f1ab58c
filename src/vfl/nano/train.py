"""`vfl nano train`: the loop that trains nano's projector (and a LoRA on, or all of, its language model) on the
function suite, and ships its weights.

The batches (cached features or streamed samples) come from `vfl.nano.batches`, the loss from `vfl.nano.loss`,
the precision from `vfl.nano.precision` (bf16 autocast on CUDA; on a CPU the one asked for, or the faster by a
timed calibration). A checkpoint, the weights as they stand and the loss curve are written every
`--save-every` steps; running the same command again resumes from the checkpoint, to the same weights.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from vfl.errors import VflError
from vfl.fingerprint import digest
from vfl.nano.align import word_vectors
from vfl.nano.config import TrainConfig, init_weights, lm_weights, saved_settings
from vfl.nano.model import add_lora, build_untrained, load_lora, load_trained
from vfl.nano.sample import FUNCTIONS, TRAINING_FUNCTIONS
from vfl.plots import plot_losses
from vfl.runner import fresh_folder, read_settings, refuse_other_settings, swap_in
from vfl.nano.batches import batch_of, cached, stream_batches, training_set
from vfl.nano.loss import autocast_context, batch_loss
from vfl.nano.precision import calibration_batch, chosen_precision, cpu_has_bf16
from vfl.training import step_samples, torch_save_atomically, warmup_cosine


SHIP_LIMIT = 50 * 2 ** 20  # bytes of weights the package may carry


def _data(run: Path, model, processor, config: TrainConfig):
    """The training set, built once per run folder."""
    return cached(run / "data.pt", lambda: training_set(model, processor, config.per_function, config.seed,
                                                         config.spec.vision_layers, config.suite,
                                                         config.functions, config.ocr_answers,
                                                         config.pseudo_words, config.loose_recognition))


def _schedules(config: TrainConfig):
    """Learning-rate factors of the projector and the LoRA: warmup then cosine; the LoRA is held at zero
    for the first `lm_start` share of the steps, so the language model cannot learn to answer from
    priors alone before the projector carries the image."""
    projector = warmup_cosine(config.warmup, config.steps)
    lora_from = int(config.lm_start * config.steps)

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


# how a run is carried out or was started, not what it trains: a resume may change them
STARTED_FROM = ("init_sha256", "init_run", "lm_from_sha256")  # what the weights a run began from were
RESUME_FREE = ("save_every", "workers", "command", "calibration", *STARTED_FROM)


def init_run(weights: Path) -> dict | None:
    """The train.json of the run whose ``weights`` a run starts from (with ``steps_trained``), so that a run
    trained in stages records every stage's command: its own ``init_run`` holds the stage before it."""
    for folder in (weights, weights.parent):
        if (folder / "train.json").is_file() and (folder / "losses.json").is_file():
            steps = len(json.loads((folder / "losses.json").read_text()))
            return {**read_settings(folder / "train.json"), "steps_trained": steps}
    return None


def retrain_commands(settings: dict) -> list[str]:
    """The recorded commands that trained a run (its train.json's settings), first stage to last; a stage the
    next one began from before it finished says at which step."""
    earlier = retrain_commands(settings["init_run"]) if settings.get("init_run") else []
    if not settings.get("command"):
        return earlier
    stopped = settings.get("steps_trained", settings["steps"])
    note = f"  # the next stage began from its weights at step {stopped} of {settings['steps']}" \
        if stopped < settings["steps"] else ""
    return earlier + [settings["command"] + note]


def check_resumable(run: Path, config: TrainConfig) -> None:
    """Refuse a run folder that holds a training run with other settings (a rerun must resume, not mix)."""
    settings = Path(run) / "train.json"
    if settings.exists():
        previous, asked = ({k: v for k, v in recorded.items() if k not in RESUME_FREE}
                           for recorded in (saved_settings(settings), json.loads(json.dumps(asdict(config)))))
        refuse_other_settings(run, previous, asked, "training run")


def training_time(run: Path) -> dict:
    """A run's timing.json: the steps timed, the seconds they took (across resumes), and each one's seconds."""
    return json.loads((Path(run) / "timing.json").read_text())


def train(run: Path, config: TrainConfig, data: dict | None = None, command: str | None = None) -> Path:
    """Train into ``run`` (resuming from its checkpoint) and return the folder of the shipped weights.
    ``data`` (ids, labels, features) replaces the run's own cached training set, e.g. features shared
    by several variants; ``command``, the command line that started it, is recorded in train.json."""
    run, device = _start(run, config, command)
    torch.manual_seed(config.seed)
    base, processor = build_untrained(config.spec, config.seed)
    if config.data == "cached":
        data = data if data is not None else _data(run, base, processor, config)
        data.setdefault("per_function", config.per_function)
    peft_model, projector, language = _trainable(base, config, device)
    if config.init is not None:  # where the run starts; a checkpoint, if any, replaces it below
        load_trained(base, peft_model, init_weights(config.init, config.spec))
    if config.lm_from is not None:  # frozen: the checkpoint holds no language-model weights, so a resume loads it again
        load_lora(peft_model, lm_weights(config.lm_from, config.spec) / "lora.safetensors")
    optimizer = torch.optim.AdamW([{"params": list(projector.parameters()), "lr": config.lr_projector},
                                   {"params": list(language.values()), "lr": config.lr_lm}], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedules(config))
    # each step's mean answer loss per function (None: absent): the four, and any training-only one trained
    curves = list(dict.fromkeys(list(FUNCTIONS) + config.functions))
    step, losses, step_seconds, function_losses = _resume(run / "checkpoint.pt", device, projector,
                                                          peft_model or base, optimizer, scheduler, curves)
    pad = processor.tokenizer.pad_token_id or 0
    stream, vectors = None, None
    if config.align_words:  # on the device already: the embeddings are
        vectors = word_vectors(processor.tokenizer, base.model.language_model.embed_tokens, config.align_letters,
                               words=config.suite == "v1")
    precision = chosen_precision(run, config, device, lambda: calibration_batch(processor, config, data, pad),
                                 lambda batch, context: batch_loss(base, config, batch, device, context, vectors)[0])
    autocast = autocast_context(precision, device)
    if config.data == "stream":
        stream = iter(stream_batches(processor, config, config.spec.image_tokens, step, pad))
    (peft_model or base).train()
    started = time.time()
    with tqdm(total=config.steps, initial=step, desc="nano train", unit="step", dynamic_ncols=True) as bar:
        while step < config.steps:
            step_started = time.perf_counter()
            batch = next(stream) if stream is not None else _cached_batch(data, step, config, pad)
            loss, per_sample, functions = batch_loss(base, config, batch, device, autocast, vectors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(projector.parameters()) + list(language.values()), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(round(loss.item(), 4))  # .item() waits for the device, so the step's time below is real
            step_seconds.append(round(time.perf_counter() - step_started, 4))
            per_sample = per_sample.cpu().tolist()
            for name in curves:
                mine = [v for v, f in zip(per_sample, functions) if TRAINING_FUNCTIONS[f] == name]
                function_losses[name].append(round(sum(mine) / len(mine), 4) if mine else None)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            bar.update(1)
            if step % config.save_every == 0 or step == config.steps:
                write_weights(run, base, peft_model, config, losses, function_losses, step_seconds)
                _save_checkpoint(run / "checkpoint.pt", base, peft_model, language, optimizer, scheduler,
                                 {"step": step, "losses": losses, "function_losses": function_losses,
                                  "step_seconds": step_seconds})
    print(f"trained {config.steps} steps in {time.time() - started:.0f} s (this session) on {config.device}; "
          f"weights in {run / 'weights'}")
    return run / "weights"


def _start(run: Path, config: TrainConfig, command: str | None) -> tuple[Path, torch.device]:
    """The settings checked against the device and any run already in ``run``, and recorded in its train.json
    (a resume keeps the precision calibration it began with, and what the --init weights it began from were)."""
    from vfl.models import check_device

    config.check()
    check_device(config.device)
    run = Path(run)
    check_resumable(run, config)
    run.mkdir(parents=True, exist_ok=True)
    settings = run / "train.json"
    kept = {k: v for k, v in (read_settings(settings) if settings.exists() else {}).items()
            if k in ("calibration", *STARTED_FROM)}
    if config.init is not None and "init_sha256" not in kept:
        folder = init_weights(config.init, config.spec)  # which weights it began from, by content
        kept["init_sha256"] = digest(sorted(folder.glob("*.safetensors")) + [folder / "spec.json"])
        if (earlier := init_run(folder)) is not None:
            kept["init_run"] = earlier
    if config.lm_from is not None and "lm_from_sha256" not in kept:
        kept["lm_from_sha256"] = digest([lm_weights(config.lm_from, config.spec) / "lora.safetensors"])
    settings.write_text(json.dumps({**asdict(config), **({"command": command} if command else {}), **kept},
                                   indent=2) + "\n")
    device = torch.device(config.device)
    if device.type == "cpu" and config.precision == "bf16" and cpu_has_bf16() is False:
        print("warning: this CPU has no bf16 units (AMX or AVX-512 BF16), so bf16 autocast is emulated and about "
              "20x slower than --precision fp32", file=sys.stderr)
    return run, device


def _trainable(base, config: TrainConfig, device: torch.device):
    """(the LoRA-wrapped model or None, the projector, the language model's trained parameters by name): what the
    recipe trains made trainable, on the device."""
    peft_model = add_lora(base, config.spec) if config.spec.lora_rank else None  # injects into `base`
    model = peft_model or base
    if config.lm_from is not None:  # the language model is a trained run's, read as it is
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    projector = base.model.multi_modal_projector
    for parameter in projector.parameters():
        parameter.requires_grad_(True)
    if config.full:
        for parameter in base.model.language_model.parameters():
            parameter.requires_grad_(True)
    if device.type == "cpu":
        # PyTorch's CPU flash-attention kernel is slow backwards: a LoRA step of 32 v2 samples spent 5.2 s in
        # backward under bf16 autocast with it and 3.3 s with eager attention (the same math; fp32 no slower)
        base.model.language_model.set_attn_implementation("eager")
    language = {n: p for n, p in model.named_parameters()
                if p.requires_grad and ("lora_" in n or (config.full and ".language_model." in f".{n}"))}
    base.to(device)
    return peft_model, projector, language


def _resume(checkpoint: Path, device, projector, model, optimizer, scheduler, curves: list[str]):
    """(step, losses, each step's seconds, each function's losses) of the run so far: nothing yet, or what the
    checkpoint holds, with the weights, optimizer, schedule and random states restored from it."""
    if not checkpoint.exists():  # step_seconds: each step's wall time, data included, across resumes
        return 0, [], [], {name: [] for name in curves}
    state = torch.load(checkpoint, weights_only=False, map_location=device)
    projector.load_state_dict(state["projector"])
    model.load_state_dict(state.get("language", state.get("lora", {})), strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = state["step"]
    saved = state.get("function_losses", {})  # a checkpoint may predate a function: absent until now
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return step, state["losses"], state.get("step_seconds", []), {n: saved.get(n, [None] * step) for n in curves}


def _cached_batch(data: dict, step: int, config: TrainConfig, pad: int):
    """Step ``step``'s batch of a cached training set (`vfl.training.step_samples`)."""
    return batch_of(data, step_samples(step, config.batch_size, len(data["ids"]), config.seed), pad, config.functions)


def _save_checkpoint(checkpoint: Path, base, peft_model, language: dict, optimizer, scheduler, progress: dict) -> None:
    """Everything a resume needs to go on bit for bit, swapped in whole (a kill leaves the last one)."""
    proj_state, _ = trainable_state(base, peft_model)
    torch_save_atomically({"projector": proj_state, "language": {n: p.detach().clone() for n, p in language.items()},
                           "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **progress,
                           "python_rng": random.getstate(), "torch_rng": torch.get_rng_state()}, checkpoint)


def progress(weights: Path) -> tuple[int, int] | None:
    """(steps trained, steps planned) of the run that wrote ``weights``; None for weights outside a run."""
    run = Path(weights).parent
    if not ((run / "train.json").is_file() and (run / "losses.json").is_file()):
        return None
    return len(json.loads((run / "losses.json").read_text())), saved_settings(run / "train.json")["steps"]


def write_weights(run: Path, base, peft_model, config: TrainConfig, losses: list[float],
                  function_losses: dict[str, list], step_seconds: list[float]) -> Path:
    """Write the weights as they stand (fp16: projector, LoRA or the whole language model, spec), the loss
    curves so far (losses.json, function_losses.json, losses.png) and the time spent (timing.json), so that an
    unfinished run can be evaluated and watched while it trains. The folder is swapped in whole: a reader sees
    one step's weights, never a mix."""
    weights = run / "weights"
    fresh = fresh_folder(weights)
    fresh.mkdir()
    proj_state, lora_state = trainable_state(base, peft_model)
    half = {"projector": proj_state, "lora": lora_state,
            "language_model": base.model.language_model.state_dict() if config.full else {}}
    for name, state in half.items():
        if state:
            save_file({k: v.to(torch.float16).contiguous().cpu() for k, v in state.items()},
                      str(fresh / f"{name}.safetensors"))
    (fresh / "spec.json").write_text(json.dumps(asdict(config.spec), indent=2) + "\n")
    swap_in(fresh, weights)
    (run / "losses.json").write_text(json.dumps(losses) + "\n")
    (run / "function_losses.json").write_text(json.dumps(function_losses) + "\n")
    (run / "timing.json").write_text(json.dumps({"steps": len(step_seconds), "seconds": round(sum(step_seconds), 1),
                                                 "step_seconds": step_seconds}) + "\n")
    plot_losses(losses, function_losses, run / "losses.png")
    return weights


def ship(weights: Path, target: Path) -> None:
    """Replace the package's weights with a finished run's: projector, LoRA if any, spec, and the run's settings
    (train.json) and loss curve, so that the shipped model says how to retrain it."""
    trained = progress(weights)
    if trained is None:
        raise VflError(f"{weights.parent} is no `vfl nano train` run folder (it lacks train.json or losses.json)")
    if trained[0] < trained[1]:
        raise VflError(f"{weights.parent} is still training (step {trained[0]} of {trained[1]}); ship a finished run")
    if not (weights / "projector.safetensors").is_file():
        raise VflError(f"{weights} holds no trained projector (projector.safetensors); nothing to ship")
    size = sum(f.stat().st_size for f in weights.glob("*.safetensors"))
    if size > SHIP_LIMIT:
        raise VflError(f"{weights} holds {size / 2 ** 20:.0f} MB of weights, more than the package's "
                       f"{SHIP_LIMIT / 2 ** 20:.0f} MB; ship a projector or LoRA run, not a full fine-tune")
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.safetensors"):
        old.unlink()
    for source in (weights / "projector.safetensors", weights / "lora.safetensors", weights / "spec.json",
                   *(weights.parent / name for name in ("train.json", "losses.json", "function_losses.json",
                                                        "losses.png", "timing.json"))):
        if source.exists():
            shutil.copy2(source, target / source.name)
    commands = retrain_commands(read_settings(target / "train.json"))
    print("\n  ".join([f"shipped {weights.parent} into {target}" + ("; trained by:" if commands else ""), *commands]))
