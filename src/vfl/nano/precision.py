"""The precision of nano's forward passes on a CPU: CPU flags do not tell which is faster, a short timed
calibration does."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from vfl.nano.batches import StreamSamples, batch_of, collate
from vfl.nano.config import TrainConfig
from vfl.nano.loss import autocast_context
from vfl.runner import read_settings


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 matrix units (AMX or AVX-512 BF16), from /proc/cpuinfo; None where unknown.
    Without them bf16 autocast on a CPU is emulated: a 2-core AMD EPYC trained nano 20x slower in bf16 than in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "amx_bf16" in flags or "avx512_bf16" in flags


CALIBRATION_SAMPLES = 4  # a batch this small times both precisions in seconds, even where bf16 is emulated


def calibration_batch(processor, config: TrainConfig, data: dict | None, pad: int):
    """The first few training samples as one batch, drawn apart from the run's own stream."""
    if config.data == "cached":
        return batch_of(data, list(range(CALIBRATION_SAMPLES)), pad, config.functions)
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
        context = autocast_context(precision, torch.device("cpu"))
        for _ in range(rounds):
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
