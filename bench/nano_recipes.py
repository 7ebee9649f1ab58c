"""Benchmark: nano v2's training recipes, compared by measurement on the same streamed data.

Each recipe trains on suite v2 (`vfl nano train --data stream --suite v2`) with the same steps, batch,
seed and loss (``--loss-weights``), so every run sees the same samples; then each run's weights are scored, where they lie
(`nano:RUN`), on held-out items of both suites (seed 1, ``--n`` per function, greedy), with 95% intervals.

  projector  the projector alone (language model frozen)
  lora       projector + LoRA rank 64 on every linear layer of the language model, joining at 10% of the steps
  full       projector + the whole language model, joining at 10% of the steps
  lora-579   as lora, fed encoder layers 5, 7 and 9 instead of 6, 9 and 12 (not run by default)

Then `vfl locate` runs on each recipe with the same v2 probes (``--locate`` per function, ``--window``), and
`vfl compare` sets their bands side by side (OUT/compare): does training the language model move, widen or
spread where each function is read?

Rows go to OUT/results.jsonl as they finish (one per recipe and suite, with the device named); a killed
run continues: training resumes from each run's checkpoint, scored rows are not scored again, and each
locate run resumes from its own records.

  python bench/nano_recipes.py --device cuda --workers 14 --steps 1100 --batch-size 64 --n 200 --out runs/recipes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

from vfl.api import locate, make_probes
from vfl.cli import function_weights
from vfl.compare import compare, write as write_comparison, table as comparison_table
from vfl.errors import VflError
from vfl.evaluate import evaluate
from vfl.jsonl import json_objects
from vfl.models import load
from vfl.nano.data import FUNCTIONS, held_out_items
from vfl.nano.model import NanoSpec
from vfl.nano.train import OCR_ANSWERS, PRECISIONS, TrainConfig, train

RECIPES = {
    "projector": dict(lora_rank=0),
    "lora": dict(lora_rank=64, lora_start=0.1, lr_lora=5e-4),
    "full": dict(lora_rank=0, full=True, lora_start=0.1, lr_lora=5e-5),
    # the encoder layers whose tokens carry colour-and-shape best (bench/encoder_probe.py)
    "lora-579": dict(lora_rank=64, lora_start=0.1, lr_lora=5e-4, vision_layers=[5, 7, 9]),
}
DEFAULT = ("projector", "lora", "full")
SCORED_SUITES = ("v2", "v1")


def recipe_config(name: str, args) -> TrainConfig:
    recipe = dict(RECIPES[name])
    rank, layers = recipe.pop("lora_rank"), recipe.pop("vision_layers", args.vision_layers)
    spec = NanoSpec(vision_layers=layers, lora_rank=rank, lora_alpha=2 * rank)
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, save_every=args.save_every,
                       spec=spec, data="stream", workers=args.workers, device=args.device, suite="v2",
                       precision=args.precision, loss_weights=args.loss_weights, ocr_answers=args.ocr_answers,
                       pseudo_words=args.pseudo_words, **recipe)


def trained_parameters(weights: Path) -> int:
    """Parameters a run trained: those saved in its weights folder (projector, LoRA or language model)."""
    total = 0
    for path in weights.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    return total


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{device} ({torch.get_num_threads()} threads)"


def main() -> None:
    try:
        run()
    except VflError as err:
        sys.exit(f"nano_recipes.py: error: {err}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(DEFAULT), help="comma-separated: " + ", ".join(RECIPES))
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=14, help="DataLoader workers rendering the stream")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="training's forward passes; auto: bf16 on CUDA, fp32 elsewhere")
    parser.add_argument("--loss-weights", type=function_weights, default=None,
                        help="per-function weights of per-sample answer losses, e.g. ground=2 (None: token mean)")
    parser.add_argument("--ocr-answers", default="tokens", choices=OCR_ANSWERS,
                        help="OCR answers as the tokenizer splits them, or spelled letter by letter (bench/ocr_answers.py)")
    parser.add_argument("--pseudo-words", type=float, default=0.0, metavar="SHARE",
                        help="share of the OCR samples showing random letter strings (bench/ocr_answers.py)")
    parser.add_argument("--vision-layers", default="6,9,12", help="DINOv2 layers fed to the projector (but lora-579)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--n", type=int, default=200, help="held-out items per function and suite")
    parser.add_argument("--eval-batch", type=int, default=64, help="items answered together (generate, left-padded)")
    parser.add_argument("--locate", type=int, default=40,
                        help="v2 probes per function for `vfl locate` on each recipe, then `vfl compare` (0: skip)")
    parser.add_argument("--window", type=int, default=3, help="the locate window")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"))
    args = parser.parse_args()
    args.vision_layers = [int(k) for k in args.vision_layers.split(",")]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    configs = {name: recipe_config(name, args) for name in recipes}
    for config in configs.values():
        config.check()

    results = args.out / "results.jsonl"
    rows = [r for _, r in json_objects(results, "results")] if results.exists() else []
    done = {(r["recipe"], r["suite"]) for r in rows}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, config in configs.items():
        located = not args.locate or (args.out / name / "locate" / "summary.json").exists()
        if located and all((name, suite) in done for suite in SCORED_SUITES):
            continue
        weights, timing = args.out / name / "weights", args.out / name / "train_seconds.json"
        started = time.perf_counter()
        train(args.out / name, config)  # trains, resumes a killed run, or (finished) refuses other settings
        if not timing.exists():  # the call that finished training (a resumed run: its last part only)
            timing.write_text(json.dumps(round(time.perf_counter() - started, 1)) + "\n")
        adapter = load(f"nano:{weights}", device=args.device)
        for suite in SCORED_SUITES:
            if (name, suite) in done:
                continue
            summary, _ = evaluate(adapter, held_out_items(FUNCTIONS, args.n, 1, suite), 32, args.eval_batch)
            row = {"recipe": name, "suite": suite, "n": args.n, "steps": config.steps, "batch_size": config.batch_size,
                   "train_s": json.loads(timing.read_text()), "trained_parameters": trained_parameters(weights),
                   "device": device_name(args.device), "precision": config.precision,
                   "loss_weights": config.loss_weights, "ocr_answers": config.ocr_answers,
                   "pseudo_words": config.pseudo_words,
                   **{f: round(summary[f]["accuracy"], 4) for f in FUNCTIONS},
                   "ci": {f: summary[f]["ci"] for f in FUNCTIONS},
                   "mean": round(sum(summary[f]["accuracy"] for f in FUNCTIONS) / len(FUNCTIONS), 4)}
            rows.append(row)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        if not located:
            probes = make_probes(FUNCTIONS, n=args.locate, suite="v2", out=args.out / "probes-v2")
            locate(adapter, probes=probes, window=args.window, out=args.out / name / "locate")
    if args.locate:
        compared = compare([args.out / name / "locate" for name in configs], list(configs))
        write_comparison(compared, args.out / "compare")
        print(comparison_table(compared))
    print("| recipe | suite | " + " | ".join(FUNCTIONS) + " | mean | train s | trained params |")
    print("|---|---|" + "---|" * (len(FUNCTIONS) + 3))
    for row in rows:
        print(f"| {row['recipe']} | {row['suite']} | " + " | ".join(f"{row[f]:.2f}" for f in FUNCTIONS)
              + f" | {row['mean']:.3f} | {row['train_s']:.0f} | {row['trained_parameters'] / 1e6:.2f}M |")
    print(f"rows: {results} (device: {rows[0]['device'] if rows else '-'})")


if __name__ == "__main__":
    main()
