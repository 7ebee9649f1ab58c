"""`vfl nano train`: train nano's projector (and a LoRA on, or all of, its language model) on the function suite.

Two data paths. ``cached`` (the CPU default, and the shipped weights' recipe): a fixed set of images per
function whose frozen-encoder features are computed once and cached in the run folder. ``stream`` (for a
GPU): every step draws fresh samples, rendered by DataLoader workers from (seed, sample index) alone, and
runs the frozen encoder on the device. The forward passes run under bf16 autocast on CUDA; on a CPU in the
precision asked for, or (``auto``) the faster of fp32 and bf16 by a short timed calibration (`chosen_precision`). The loss covers
answer tokens only (token mean, or per-sample means weighted by function with ``loss_weights``), and the
vocabulary projection runs only at those positions. A checkpoint, the weights as they stand and the loss
curve are written every `--save-every` steps; running the same command again resumes from the checkpoint,
to the same weights.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from vfl.errors import VflError
from vfl.nano.align import alignment_loss, cell_kinds, word_vectors
from vfl.nano.config import TrainConfig, saved_settings
from vfl.nano.data import sample_maker
from vfl.nano.config import IMAGE_SIZE
from vfl.nano.model import add_lora, build_untrained
from vfl.nano.sample import FUNCTIONS, TRAINING_FUNCTIONS
from vfl.nano.suite_v2 import loose_recognition, ocr_split
from vfl.plots import plot_losses
from vfl.runner import read_settings, refuse_other_settings
from vfl.training import step_samples, torch_save_atomically


SHIP_LIMIT = 50 * 2 ** 20  # bytes of weights the package may carry


def spelled(tokenizer, text: str) -> list[int]:
    """``text`` as one single-character token per character: "bear" as b, e, a, r rather than the one token
    "bear". A word read letter by letter is built from 26 tokens that every training word exercises, so a
    held-out word needs no output token that OCR training never produced; it decodes to the same string."""
    ids = tokenizer.convert_tokens_to_ids(list(text))
    if None in ids or tokenizer.decode(ids) != text:
        raise VflError(f"{text!r} has characters without a token of their own; only plain letters can be spelled")
    return ids


def token_ids(processor, question: str, answer: str, image_tokens: int,
              spell: bool = False) -> tuple[list[int], list[int]]:
    """The prompt exactly as the processor lays it out at inference, then the answer (``spell``: letter by
    letter) and <|im_end|>."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = prompt.replace("<image>", "<image>" * image_tokens)
    tokenizer = processor.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    end = tokenizer("<|im_end|>", add_special_tokens=False).input_ids
    answer_ids = (spelled(tokenizer, answer) + end if spell
                  else tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids)
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


@torch.inference_mode()
def vision_features(model, processor, images, layers: list[int], batch: int = 32,
                    dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Pre-projector features of the configured encoder layer(s), (N, tokens, width); float16 halves a
    cached training set's memory."""
    chunks = []
    for i in tqdm(range(0, len(images), batch), desc="vision features", unit="batch"):
        pixels = processor.image_processor(images[i:i + batch], return_tensors="pt")["pixel_values"]
        chunks.append(encoded(model, pixels, layers).to(dtype))
    return torch.cat(chunks)


def training_sample(make, function: str, index: int, seed: int, pseudo_words: float = 0.0,
                    loose: float = 0.0):
    """Training sample ``index`` of ``function``; a ``pseudo_words`` share of OCR samples shows random strings,
    a ``loose`` share of recognition samples no binding distractors."""
    if function == "ocr" and pseudo_words:
        return make(function, index, seed, split=ocr_split(index, seed, pseudo_words))
    if function == "recog" and loose_recognition(index, seed, loose):
        return make(function, index, seed, binding=False)
    return make(function, index, seed)


def training_set(model, processor, per_function: int, seed: int, layers: list[int], suite: str = "v1",
                 functions=FUNCTIONS, ocr_answers: str = "tokens", pseudo_words: float = 0.0,
                 loose: float = 0.0) -> dict:
    """Token ids, labels and the encoder layers' concatenated features of the training samples, ``per_function``
    of each of ``functions`` in turn."""
    make = sample_maker(suite)
    samples = [training_sample(make, f, i, seed, pseudo_words, loose) for f in functions for i in range(per_function)]
    features = vision_features(model, processor, [s.image for s in samples], layers)
    tokens = [token_ids(processor, s.question, s.answer, features.shape[1], spells(s.function, ocr_answers))
              for s in samples]
    return {"ids": [t[0] for t in tokens], "labels": [t[1] for t in tokens], "features": features}


def spells(function: str, ocr_answers: str) -> bool:
    """Whether a sample of ``function`` is trained on its answer spelled letter by letter."""
    return function == "ocr" and ocr_answers == "letters"


def cached(path: Path, build) -> dict:
    """``torch.load(path)``, or ``build()`` saved there atomically first."""
    if path.exists():
        return torch.load(path)
    data = build()
    torch_save_atomically(data, path)
    return data


def _data(run: Path, model, processor, config: TrainConfig):
    """The training set, built once per run folder."""
    return cached(run / "data.pt", lambda: training_set(model, processor, config.per_function, config.seed,
                                                         config.spec.vision_layers, config.suite,
                                                         config.functions, config.ocr_answers,
                                                         config.pseudo_words, config.loose_recognition))


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
    targets = labels[:, 1:]
    chosen = targets != -100
    logits = model.lm_head(hidden[:, :-1][chosen])
    per_token = torch.nn.functional.cross_entropy(logits.float(), targets[chosen], reduction="none")
    rows = chosen.nonzero()[:, 0]
    per_sample = torch.zeros(ids.shape[0], device=per_token.device).index_add_(0, rows, per_token)
    per_sample = per_sample / chosen.sum(1).clamp(min=1)
    if weights is None:
        loss = per_token.mean()
    else:
        weights = weights.to(per_sample.device)
        loss = (per_sample * weights).sum() / weights.sum().clamp(min=1e-12)
    if alignment is not None:
        weight, kinds, vectors = alignment
        loss = loss + weight * alignment_loss(image, kinds, vectors)
    return loss, per_sample.detach()


def padded(ids: list[list[int]], labels: list[list[int]], pad_id: int):
    """Right-padded token ids, labels (-100) and attention mask."""
    width = max(len(x) for x in ids)
    tensor = torch.full((len(ids), width), pad_id, dtype=torch.long)
    label_tensor = torch.full((len(ids), width), -100, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (x, y) in enumerate(zip(ids, labels)):
        tensor[row, : len(x)], label_tensor[row, : len(y)], attention[row, : len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return tensor, label_tensor, attention


def _batch(data, order: list[int], pad_id: int, functions=FUNCTIONS):
    """The samples ``order`` of a cached training set, with each one's index in `TRAINING_FUNCTIONS`."""
    ids, labels, attention = padded([data["ids"][i] for i in order], [data["labels"][i] for i in order], pad_id)
    kinds = [TRAINING_FUNCTIONS.index(functions[i // data["per_function"]]) for i in order]
    return ids, labels, attention, data["features"][order], kinds


def stream_slot(functions: list[str], index: int) -> tuple[str, int]:
    """(function, its own sample index) of sample ``index`` of a stream that trains ``functions`` in turn: a
    function named k times takes k slots of each turn and draws its samples 0, 1, 2, ... across them."""
    turn, slot = divmod(index, len(functions))
    function = functions[slot]
    return function, turn * functions.count(function) + functions[:slot].count(function)


class StreamSamples(torch.utils.data.Dataset):
    """Sample i of the endless training stream: the function of slot ``i % len(functions)`` (`stream_slot`),
    drawn by the suite's sample maker from (seed, i) alone, as pixel values and token ids; the same i always gives
    the same sample, in any worker; with each image token's target for word alignment (`vfl.nano.align.cell_kinds`;
    suite v1's OCR words are targets too), for the ``aligned`` functions' samples only where given."""

    def __init__(self, processor, seed: int, image_tokens: int, suite: str = "v1", functions=FUNCTIONS,
                 ocr_answers: str = "tokens", pseudo_words: float = 0.0, loose: float = 0.0, letters: bool = False,
                 aligned=None):
        self.processor, self.seed, self.image_tokens = processor, seed, image_tokens
        self.make, self.functions, self.ocr_answers = sample_maker(suite), list(functions), ocr_answers
        self.pseudo_words, self.loose, self.letters, self.words = pseudo_words, loose, letters, suite == "v1"
        self.aligned = None if aligned is None else set(aligned)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, index: int):
        function, own = stream_slot(self.functions, index)
        sample = training_sample(self.make, function, own, self.seed, self.pseudo_words, self.loose)
        pixels = self.processor.image_processor([sample.image], return_tensors="pt")["pixel_values"][0]
        ids, labels = token_ids(self.processor, sample.question, sample.answer, self.image_tokens,
                                spells(function, self.ocr_answers))
        scene = sample.scene if self.aligned is None or function in self.aligned else None
        kinds = cell_kinds(scene, IMAGE_SIZE, IMAGE_SIZE // round(self.image_tokens ** 0.5), self.letters, self.words)
        return pixels, ids, labels, TRAINING_FUNCTIONS.index(function), torch.tensor(kinds)


def collate(items, pad_id: int):
    pixels, ids, labels, functions, kinds = zip(*items)
    return (*padded(list(ids), list(labels), pad_id), torch.stack(pixels), list(functions), torch.stack(kinds))


def stream_batches(processor, config: TrainConfig, image_tokens: int, start: int, pad_id: int):
    """Steps ``start``..``config.steps - 1`` of the stream: step t holds samples t*B .. t*B + B - 1, rendered by
    ``config.workers`` DataLoader workers (so a resumed run sees exactly the samples it would have seen)."""
    steps = [list(range(t * config.batch_size, (t + 1) * config.batch_size)) for t in range(start, config.steps)]
    samples = StreamSamples(processor, config.seed, image_tokens, config.suite, config.functions, config.ocr_answers,
                            config.pseudo_words, config.loose_recognition, config.align_letters, config.align_functions)
    return torch.utils.data.DataLoader(samples,
                                       batch_sampler=steps, num_workers=config.workers,
                                       collate_fn=partial(collate, pad_id=pad_id),
                                       pin_memory=config.device.startswith("cuda"))


def encoded(model, pixels: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """The frozen encoder's features of the configured layers, on the model's device."""
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels).hidden_states
        return torch.cat([hidden[k] for k in layers], dim=-1)


def _schedules(config: TrainConfig):
    """Learning-rate factors of the projector and the LoRA: warmup then cosine; the LoRA is held at zero
    for the first `lm_start` share of the steps, so the language model cannot learn to answer from
    priors alone before the projector carries the image."""
    warmup = max(1, int(config.warmup * config.steps))
    lora_from = int(config.lm_start * config.steps)

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


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 matrix units (AMX or AVX-512 BF16), from /proc/cpuinfo; None where unknown.
    Without them bf16 autocast on a CPU is emulated: a 2-core AMD EPYC trained nano 20x slower in bf16 than in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _autocast(precision: str, device: torch.device):
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


CALIBRATION_SAMPLES = 4  # a batch this small times both precisions in seconds, even where bf16 is emulated


def calibration_batch(processor, config: TrainConfig, data: dict | None, pad: int):
    """The first few training samples as one batch, drawn apart from the run's own stream."""
    if config.data == "cached":
        return _batch(data, list(range(CALIBRATION_SAMPLES)), pad, config.functions)
    samples = StreamSamples(processor, config.seed, config.spec.image_tokens, config.suite, config.functions,
                            config.ocr_answers, config.pseudo_words, config.loose_recognition, config.align_letters,
                            config.align_functions)
    return collate([samples[i] for i in range(CALIBRATION_SAMPLES)], pad)


def time_precisions(make_batch, loss_of, rounds: int = 2) -> dict[str, float]:
    """Seconds of one forward and backward pass over a small batch in fp32 and in bf16 autocast, the last of
    ``rounds`` each (the first warms up); bf16 is not timed again where its first pass took 5x fp32's (emulated).
    The weights' gradients are cleared and the random states restored, so training goes on as if untimed."""
    batch, states = make_batch(), (random.getstate(), torch.get_rng_state())
    seconds = {}
    for precision in ("fp32", "bf16"):
        context = _autocast(precision, torch.device("cpu"))
        for round_ in range(rounds):
            started = time.perf_counter()
            loss_of(batch, context).backward()
            seconds[precision] = round(time.perf_counter() - started, 3)
            if precision == "bf16" and seconds["bf16"] > 5 * seconds["fp32"]:
                break
    random.setstate(states[0])
    torch.set_rng_state(states[1])
    return seconds


def chosen_precision(run: Path, config: TrainConfig, device: torch.device, make_batch, loss_of) -> str:
    """The forward passes' precision: the one asked for; with ``auto``, bf16 on CUDA, and on a CPU the faster of
    fp32 and bf16 autocast by a short timed calibration (`time_precisions`): CPU flags do not tell (bf16 was 2x
    faster than fp32 with AMX, 1.5x slower with AVX-512 BF16 alone, 20x slower emulated). The choice and its
    timings go into train.json's ``calibration``; a resumed run reads them back instead of timing again, so it
    trains on as it began."""
    if config.precision != "auto":
        return config.precision
    if device.type != "cpu":
        return "bf16" if device.type == "cuda" else "fp32"
    settings = read_settings(run / "train.json")
    if "calibration" not in settings:
        seconds = time_precisions(make_batch, loss_of)
        settings["calibration"] = {"precision": min(seconds, key=seconds.get), "seconds": seconds,
                                   "samples": CALIBRATION_SAMPLES}
        (run / "train.json").write_text(json.dumps(settings, indent=2) + "\n")
        print(f"precision: {settings['calibration']['precision']} (one pass of {CALIBRATION_SAMPLES} samples: "
              f"fp32 {seconds['fp32']} s, bf16 {seconds['bf16']} s)", file=sys.stderr)
    return settings["calibration"]["precision"]


# how a run is carried out or was started, not what it trains: a resume may change them
RESUME_FREE = ("save_every", "workers", "command", "calibration")


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
    autocast = _autocast(precision, device)
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
    (a resume keeps the precision calibration it began with)."""
    from vfl.models import check_device

    config.check()
    check_device(config.device)
    run = Path(run)
    check_resumable(run, config)
    run.mkdir(parents=True, exist_ok=True)
    settings = run / "train.json"
    kept = {k: v for k, v in (read_settings(settings) if settings.exists() else {}).items() if k == "calibration"}
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
    return _batch(data, step_samples(step, config.batch_size, len(data["ids"]), config.seed), pad, config.functions)


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
    weights, fresh, old = run / "weights", run / "weights.tmp", run / "weights.old"
    for folder in (fresh, old):
        shutil.rmtree(folder, ignore_errors=True)
    fresh.mkdir()
    proj_state, lora_state = trainable_state(base, peft_model)
    half = {"projector": proj_state, "lora": lora_state,
            "language_model": base.model.language_model.state_dict() if config.full else {}}
    for name, state in half.items():
        if state:
            save_file({k: v.to(torch.float16).contiguous().cpu() for k, v in state.items()},
                      str(fresh / f"{name}.safetensors"))
    (fresh / "spec.json").write_text(json.dumps(asdict(config.spec), indent=2) + "\n")
    if weights.exists():
        weights.rename(old)
    fresh.rename(weights)
    shutil.rmtree(old, ignore_errors=True)
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
