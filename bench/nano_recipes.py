"""Benchmark: nano v2's training recipes, compared by measurement on the same streamed data.

Each recipe trains on one suite (`vfl nano train --data stream --suite v2`, or ``--suite v1``: nano v2's data)
with the same steps, batch,
seed and loss (``--loss-weights``), so every run sees the same samples; then each run's weights are scored, where they lie
(`nano:RUN`), on held-out items of both suites (seed 1, ``--n`` per function, greedy), with 95% intervals.

  projector  the projector alone (language model frozen)
  lora       projector + LoRA rank 64 on every linear layer of the language model, joining at 10% of the steps
  full       projector + the whole language model, joining at 10% of the steps
  lora-579   as lora, fed encoder layers 5, 7 and 9 instead of 6, 9 and 12 (not run by default)
  lora-letters14  as lora, with 256 image tokens of 14 px (no 2x2 shuffle) and each OCR token aligned to its
             letter (`--align-letters`; not run by default): a fresh projector fitted to letters alone names them
             for 0.61 of held-out letter tokens at 14 px, 0.486 at 28 px (research/nano_v2/results/align_fit_letters_14px_cpu.json)

Then `vfl locate` runs on each recipe with the same v2 probes (``--locate`` per function, ``--window``), and
`vfl compare` sets their bands side by side (OUT/compare): does training the language model move, widen or
spread where each function is read?

Rows go to OUT/results.jsonl as they finish (one per recipe and suite, with the device named); a killed
run continues: training resumes from each run's checkpoint, scored rows are not scored again, and each
locate run resumes from its own records.

  python bench/nano_recipes.py --device cuda --workers 14 --steps 1100 --batch-size 64 --n 200 --out runs/recipes

A lent GPU comes for minutes, not hours, and the streamed data leaves it mostly idle, so ``--concurrent`` trains
the recipes at the same time, one process each (``--workers`` each), and ``--budget S`` chooses the steps for
you: every recipe first trains ``--calibrate`` steps as the real runs will (concurrently if asked), and the
steps are the training seconds S over the slowest recipe's median seconds a step (OUT/calibration.json, reused
on a rerun, so a resumed run keeps its steps). tools/gpu_run.sh runs it so on a lent GPU.

  python bench/nano_recipes.py --device cuda --concurrent --workers 4 --budget 240 --n 200 --out runs/recipes
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from vfl.api import locate, make_probes
from vfl.options import function_weights
from vfl.compare import compare, profile_table, write as write_comparison, table as comparison_table
from vfl.errors import VflError
from vfl.evaluate import evaluate
from vfl.jsonl import json_objects
from vfl.models import device_name, load
from vfl.nano.data import held_out_items
from vfl.nano.sample import FUNCTIONS
from vfl.nano import parts
from vfl.nano.config import NanoSpec
from vfl.nano.config import OCR_ANSWERS, PRECISIONS, TrainConfig, training_functions
from vfl.nano.train import check_resumable, train, training_time

RECIPES = {
    "projector": dict(lora_rank=0),
    "lora": dict(lora_rank=64, lm_start=0.1, lr_lm=5e-4),
    "full": dict(lora_rank=0, full=True, lm_start=0.1, lr_lm=5e-5),
    # the encoder layers whose tokens carry colour-and-shape best (research/nano_v2/encoder_probe.py)
    "lora-579": dict(lora_rank=64, lm_start=0.1, lr_lm=5e-4, vision_layers=[5, 7, 9]),
    "lora-letters14": dict(lora_rank=64, lm_start=0.1, lr_lm=5e-4, shuffle=1, align_letters=True),
}
DEFAULT = ("projector", "lora", "full")
SCORED_SUITES = ("v2", "v1")


def recipe_config(name: str, args) -> TrainConfig:
    recipe = dict(RECIPES[name])
    rank, layers = recipe.pop("lora_rank"), recipe.pop("vision_layers", args.vision_layers)
    spec = NanoSpec(vision_layers=layers, shuffle=recipe.pop("shuffle", 2), lora_rank=rank, lora_alpha=2 * rank)
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, save_every=args.save_every,
                       spec=spec, data="stream", workers=args.workers, device=args.device, suite=args.suite,
                       precision=args.precision, loss_weights=args.loss_weights, ocr_answers=args.ocr_answers,
                       pseudo_words=args.pseudo_words, functions=training_functions(args.functions),
                       loose_recognition=args.loose_recognition, align_words=args.align_words,
                       align_functions=args.align_functions, **recipe)


def _train_or_exit(run: Path, config: TrainConfig, threads: int) -> None:
    """`train` in a child process, on its share of the CPU threads (processes that each spin on all of them
    train ten times slower); a user error ends it in one sentence and exit code 2."""
    torch.set_num_threads(threads)
    try:
        train(run, config)
    except VflError as err:
        print(f"nano_recipes.py: {run.name}: {err}", file=sys.stderr)
        sys.exit(2)


def train_all(configs: dict[str, TrainConfig], out: Path, concurrent: bool) -> None:
    """Train (or resume, or find finished) each recipe's run in OUT/NAME: one after another, or with
    ``concurrent`` at the same time, one process each."""
    for name, config in configs.items():
        check_resumable(out / name, config)  # refused here in one sentence, not in a child process
    if not concurrent or len(configs) <= 1:
        for name, config in configs.items():
            train(out / name, config)
        return
    parts.dinov2(), parts.smollm2_dir()  # convert the packaged parts once, before the children look for them
    spawn = multiprocessing.get_context("spawn")  # CUDA cannot be forked; the children may start their own workers
    threads = max(1, torch.get_num_threads() // len(configs))
    children = {name: spawn.Process(target=_train_or_exit, args=(out / name, config, threads), name=name)
                for name, config in configs.items()}
    for child in children.values():
        child.start()
    for child in children.values():
        child.join()
    failed = {name: child.exitcode for name, child in children.items() if child.exitcode}
    if failed:
        raise VflError("training failed for " + ", ".join(f"{n} (exit code {c})" for n, c in failed.items())
                       + "; its error is printed above")


def calibrated_steps(configs: dict[str, TrainConfig], out: Path, budget: float, calibrate: int,
                     concurrent: bool) -> int:
    """The steps each recipe can train in ``budget`` seconds: ``calibrate`` steps of every recipe are trained as
    the real runs will be (into OUT/calibration/NAME), and the slowest recipe's median step, the first step (worker
    start-up) left out, sets the pace. Recorded in OUT/calibration.json and reused on a rerun."""
    record = out / "calibration.json"
    asked = {"budget_s": budget, "calibrate_steps": calibrate, "recipes": sorted(configs), "concurrent": concurrent}
    if record.exists():
        saved = json.loads(record.read_text())
        if {k: saved[k] for k in asked} != asked:
            raise VflError(f"{out} was calibrated with other settings ({ {k: saved[k] for k in asked} }); "
                           "use another --out")
        return saved["steps"]
    trials = {name: replace(config, steps=calibrate, save_every=calibrate) for name, config in configs.items()}
    train_all(trials, out / "calibration", concurrent)
    pace = {name: round(statistics.median(training_time(out / "calibration" / name)["step_seconds"][1:]), 4)
            for name in trials}
    steps = int(budget / max(pace.values()))
    if steps < 1:
        raise VflError(f"--budget {budget:g} s is less than one step ({max(pace.values()):.2f} s)")
    record.write_text(json.dumps({**asked, "seconds_per_step": pace, "steps": steps}, indent=2) + "\n")
    print(f"calibrated: {steps} steps in {budget:g} s ({', '.join(f'{n} {s:.3f} s/step' for n, s in pace.items())})")
    return steps


def trained_parameters(weights: Path) -> int:
    """Parameters a run trained: those saved in its weights folder (projector, LoRA or language model)."""
    total = 0
    for path in weights.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    return total


def main() -> None:
    try:
        run()
    except VflError as err:
        sys.exit(f"nano_recipes.py: error: {err}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(DEFAULT), help="comma-separated: " + ", ".join(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every recipe (default 1100)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="choose --steps so that each recipe trains in about this many seconds (calibrated)")
    parser.add_argument("--calibrate", type=int, default=30, help="steps each recipe trains to calibrate --budget")
    parser.add_argument("--concurrent", action="store_true",
                        help="train the recipes at the same time, one process each (a GPU the data leaves idle)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=14, help="DataLoader workers rendering each recipe's stream")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="training's forward passes; auto: bf16 on CUDA, fp32 elsewhere")
    parser.add_argument("--loss-weights", type=function_weights, default=None,
                        help="per-function weights of per-sample answer losses, e.g. ground=2 (None: token mean)")
    parser.add_argument("--ocr-answers", default="tokens", choices=OCR_ANSWERS,
                        help="OCR answers as the tokenizer splits them, or spelled letter by letter (research/nano_v2/ocr_answers.py)")
    parser.add_argument("--pseudo-words", type=float, default=0.0, metavar="SHARE",
                        help="share of the OCR samples showing random letter strings (research/nano_v2/ocr_answers.py)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS),
                        help="trained in turn; describe adds captions of recognition scenes (research/nano_v2/recog_shortcut.py)")
    parser.add_argument("--loose-recognition", type=float, default=0.0, metavar="SHARE",
                        help="share of the recognition samples without binding distractors")
    parser.add_argument("--align-words", type=float, default=1.0, metavar="WEIGHT",
                        help="weight of the image tokens' word alignment (vfl.nano.align): at 1, recognition alone "
                             "went from 0.45 to 0.93 on CPU (research/nano_v2/results/align_contrast_cpu.json); 0: none")
    parser.add_argument("--suite", default="v2", choices=("v1", "v2"),
                        help="the training data, and the probes of the locate runs (v1: nano v2's data)")
    parser.add_argument("--align-functions", type=training_functions,
                        default=None, help="with --align-words: align only these functions' samples (nano v2: recog)")
    parser.add_argument("--vision-layers", default="6,9,12", help="DINOv2 layers fed to the projector (but lora-579)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--n", type=int, default=200, help="held-out items per function and suite")
    parser.add_argument("--eval-batch", type=int, default=64, help="items answered together (generate, left-padded)")
    parser.add_argument("--locate", type=int, default=40,
                        help="probes per function (of --suite) for `vfl locate` on each recipe, then `vfl compare` "
                             "(0: skip)")
    parser.add_argument("--window", type=int, default=3, help="the locate window")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="the longest answer eval and locate decode")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"))
    args = parser.parse_args()
    args.vision_layers = [int(k) for k in args.vision_layers.split(",")]
    if args.budget is not None and args.steps is not None:
        parser.error("pass --steps or --budget, not both")
    if args.budget is not None and (args.budget <= 0 or args.calibrate < 2):
        parser.error("--budget must be positive and --calibrate at least 2 (its first step is left out)")
    args.steps = args.steps or 1100
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
    if args.budget is not None:
        steps = calibrated_steps(configs, args.out, args.budget, args.calibrate, args.concurrent)
        configs = {name: replace(config, steps=steps) for name, config in configs.items()}

    def located(name: str) -> bool:
        return not args.locate or (args.out / name / "locate" / "summary.json").exists()

    def finished(name: str) -> bool:
        return located(name) and all((name, suite) in done for suite in SCORED_SUITES)

    # trains, resumes killed runs, or finds them finished
    train_all({n: c for n, c in configs.items() if not finished(n)}, args.out, args.concurrent)
    adapters = {}

    def adapter(name: str):
        if name not in adapters:
            adapters[name] = load(f"nano:{args.out / name / 'weights'}", device=args.device)
        return adapters[name]

    for name, config in configs.items():  # every recipe is scored before any is located: rows first, under a deadline
        weights = args.out / name / "weights"
        for suite in SCORED_SUITES:
            if (name, suite) in done:
                continue
            summary, _ = evaluate(adapter(name), held_out_items(FUNCTIONS, args.n, 1, suite), args.max_new_tokens,
                                  args.eval_batch)
            row = {"recipe": name, "suite": suite, "n": args.n, "max_new_tokens": args.max_new_tokens, "steps": config.steps,
                   "batch_size": config.batch_size,
                   "train_s": training_time(args.out / name)["seconds"], "concurrent": args.concurrent,
                   "trained_parameters": trained_parameters(weights),
                   "device": device_name(args.device), "precision": config.precision,
                   "loss_weights": config.loss_weights, "ocr_answers": config.ocr_answers,
                   "pseudo_words": config.pseudo_words, "functions": config.functions,
                   "loose_recognition": config.loose_recognition, "align_words": config.align_words,
                   "align_letters": config.align_letters, "token_px": config.spec.token_px,
                   **{f: round(summary[f]["accuracy"], 4) for f in FUNCTIONS},
                   "ci": {f: summary[f]["ci"] for f in FUNCTIONS},
                   "mean": round(sum(summary[f]["accuracy"] for f in FUNCTIONS) / len(FUNCTIONS), 4)}
            rows.append(row)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    # a full fine-tune's language model is too large to copy off a lent GPU, so it is located there first
    for name in sorted(configs, key=lambda n: not configs[n].full):
        if not located(name):
            probes = make_probes(FUNCTIONS, n=args.locate, suite=args.suite, out=args.out / f"probes-{args.suite}")
            locate(adapter(name), probes=probes, window=args.window, out=args.out / name / "locate",
                   max_new_tokens=args.max_new_tokens)
    if args.locate:
        compared = compare([args.out / name / "locate" for name in configs], list(configs), paper=True)
        write_comparison(compared, args.out / "compare")
        print(comparison_table(compared))
        print(profile_table(compared))
    print("| recipe | suite | " + " | ".join(FUNCTIONS) + " | mean | train s | trained params |")
    print("|---|---|" + "---|" * (len(FUNCTIONS) + 3))
    for row in rows:
        print(f"| {row['recipe']} | {row['suite']} | " + " | ".join(f"{row[f]:.2f}" for f in FUNCTIONS)
              + f" | {row['mean']:.3f} | {row['train_s']:.0f} | {row['trained_parameters'] / 1e6:.2f}M |")
    print(f"rows: {results} (device: {rows[0]['device'] if rows else '-'})")


if __name__ == "__main__":
    main()
