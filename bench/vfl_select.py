"""Benchmark: VFL-select against random, keyword-expert and oracle selection on nano (20% budgets).

The pool mixes nano's four functions unevenly and adds samples useless for them; its true labels are
written apart (truth.json) and only the oracle and the final scoring read them:

  recog, ground, count, ocr   image questions (counting up to 10 objects: nano was trained on 1-6)
  text                        text-only questions (no image)
  noise                       image questions with a wrong answer (another sample's answer)
  dup                         near-duplicates: a pool image with faint pixel noise, same question and answer

Every arm fine-tunes nano with the same recipe (LoRA on all decoder layers) for the same number of
epochs, so a 20% subset trains for a fifth of the steps of the full pool:

  full     the whole pool
  random   20%, uniformly at random (seeded)
  vfl      20% by `vfl select` (balanced over the functions with a VFL, labels from VFL ablation)
  expert   20% by keywords in the question ("how many" = count, "where" = ground, "is there" = recog,
           "word" = ocr), balanced over the four, random within a keyword (seeded)
  oracle   20% balanced over the four true functions, clean samples only (seeded)

Each arm is scored on held-out items of every function (counting 1-10); the row keeps per-function
accuracy, their mean, and the mean's share of the full pool's mean in the same seed. The VFL labels are
compared with the true ones (accuracy on the clean function samples, confusion matrix). Rows go to
OUT/results.jsonl as they finish: a killed run continues where it stopped.

  python bench/vfl_select.py --vfl runs/nano-n60/summary.json --seeds 0,1,2 --out runs/vfl-select
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from vfl import lora
from vfl.evaluate import evaluate
from vfl.jsonl import json_objects
from vfl.models import load
from vfl.nano.data import held_out_items
from vfl.nano.sample import FUNCTIONS
from vfl.nano.suite_v1 import make_sample
from vfl.decision import load_vfls
from vfl.report import mean_sd
from vfl.select import select, take_in_turns

ARMS = ("full", "random", "vfl", "expert", "oracle")
COUNTS = (1, 10)
# the pool's make-up: most recognition, little OCR, and 10% each of text-only, noise and near-duplicates
MIX = {"recog": 0.35, "ground": 0.2, "count": 0.15, "ocr": 0.05, "text": 0.08, "noise": 0.08, "dup": 0.09}
TEXT = [("What is the capital of France? Answer with one word.", "Paris"),
        ("How many days are in a week? Answer with a number.", "7"),
        ("Where do penguins live? Answer with one word.", "Antarctica"),
        ("How many legs does a spider have? Answer with a number.", "8"),
        ("What colour is grass? Answer with one word.", "green"),
        ("Is there a moon in the night sky? Answer yes or no.", "yes"),
        ("Which word rhymes with cat: hat or dog?", "hat"),
        ("What is 2 plus 2? Answer with a number.", "4")]
KEYWORDS = {"count": "how many", "ground": "where", "recog": "is there", "ocr": "word"}


def conversation(sample_id: str, image: str | None, question: str, answer: str) -> dict:
    record = {"id": sample_id, "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + question},
                                                 {"from": "gpt", "value": answer}]}
    return {**record, "image": image} if image else record


def build_pool(folder: Path, size: int, seed: int = 0) -> tuple[Path, dict]:
    """pool.json (LLaVA format, shuffled, opaque ids) + truth.json {id: kind}; written once."""
    pool_path, truth_path = folder / "pool.json", folder / "truth.json"
    if pool_path.exists() and truth_path.exists():
        return pool_path, json.loads(truth_path.read_text())
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    quota = {kind: round(share * size) for kind, share in MIX.items()}
    items = []  # (kind, image or None, question, answer)
    for function in FUNCTIONS:
        for i in range(quota[function]):
            s = make_sample(function, i, 200 + seed, counts=COUNTS)
            items.append((function, s.image, s.question, s.answer))
    clean = list(items)
    for i in range(quota["text"]):
        items.append(("text", None, *TEXT[i % len(TEXT)]))
    for i in range(quota["noise"]):
        function = FUNCTIONS[i % len(FUNCTIONS)]
        s = make_sample(function, 10_000 + i, 200 + seed, counts=COUNTS)
        wrong = next(o.answer for k in range(1, 50) if (o := make_sample(function, 20_000 + 50 * i + k, 200 + seed,
                                                                          counts=COUNTS)).answer != s.answer)
        items.append(("noise", s.image, s.question, wrong))
    noise = np.random.default_rng(seed)
    for i in range(quota["dup"]):
        _, image, question, answer = clean[rng.randrange(len(clean))]
        pixels = np.asarray(image, dtype=np.int16) + noise.integers(-4, 5, size=(image.height, image.width, 3))
        items.append(("dup", Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), question, answer))
    rng.shuffle(items)
    records, truth = [], {}
    for k, (kind, image, question, answer) in enumerate(items):
        sample_id = f"s{k:04d}"
        name = None
        if image is not None:
            name = f"images/{sample_id}.png"
            image.save(folder / name)
        records.append(conversation(sample_id, name, question, answer))
        truth[sample_id] = kind
    pool_path.write_text(json.dumps(records) + "\n")
    truth_path.write_text(json.dumps(truth) + "\n")
    return pool_path, truth


def balanced_pick(groups: dict[str, list[str]], wanted: int, rng: random.Random) -> list[str]:
    """Take the groups in turn, a random member each time, until ``wanted`` or the groups run dry."""
    return take_in_turns({k: rng.sample(v, len(v))[::-1] for k, v in groups.items()}, wanted)


def expert_ids(samples: list[dict], wanted: int, seed: int) -> list[str]:
    groups = {f: [s["id"] for s in samples if word in s["turns"][0][0].lower()] for f, word in KEYWORDS.items()}
    return balanced_pick(groups, wanted, random.Random(f"expert:{seed}"))


def oracle_ids(truth: dict, wanted: int, seed: int) -> list[str]:
    groups = {f: sorted(i for i, kind in truth.items() if kind == f) for f in FUNCTIONS}
    return balanced_pick(groups, wanted, random.Random(f"oracle:{seed}"))


def agreement(profiles_path: Path, truth: dict) -> dict:
    """Confusion of true kinds (rows) against VFL labels (columns); accuracy on clean function samples."""
    rows = [r for _, r in json_objects(profiles_path, "profiles")]
    labels = sorted({r["function"] for r in rows}, key=lambda f: (f == "none", f))
    kinds = list(FUNCTIONS) + ["text", "noise", "dup"]
    confusion = {k: {label: sum(1 for r in rows if truth[r["id"]] == k and r["function"] == label) for label in labels}
                 for k in kinds}
    clean = [r for r in rows if truth[r["id"]] in FUNCTIONS]
    hits = sum(r["function"] == truth[r["id"]] for r in clean)
    return {"accuracy": hits / len(clean), "n": len(clean), "confusion": confusion, "labels": labels}


def arm_ids(arm: str, samples: list[dict], truth: dict, selection: dict, seed: int) -> list[str]:
    """An arm's training ids; every 20% arm takes as many as `vfl select` was asked for."""
    wanted = selection["wanted"]
    if arm == "full":
        return [s["id"] for s in samples]
    if arm == "random":
        return random.Random(f"random:{seed}").sample([s["id"] for s in samples], wanted)
    if arm == "vfl":
        return selection["ids"]
    if arm == "expert":
        return expert_ids(samples, wanted, seed)
    return oracle_ids(truth, wanted, seed)


def table(rows: list[dict]) -> str:
    """Mean over seeds per arm (± the standard deviation across seeds)."""
    head = "| arm | seeds | samples | steps | " + " | ".join(FUNCTIONS) + " | mean | share of full |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for arm in ("none",) + ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cells = [mean_sd([r["accuracy"][f] for r in mine]) for f in FUNCTIONS]
        shares = [r["share_of_full"] for r in mine if r["share_of_full"] is not None]
        share = mean_sd(shares) if shares else "–"
        lines.append(f"| {arm} | {len(mine)} | {mine[0]['samples']} | {mine[0]['steps']} | " + " | ".join(cells)
                     + f" | {mean_sd([r['mean'] for r in mine])} | {share} |")
    return "\n".join(lines)


def confusion_table(labels: dict) -> str:
    head = "| true kind | " + " | ".join(f"labelled {label}" for label in labels["labels"]) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for kind, row in labels["confusion"].items():
        lines.append(f"| {kind} | " + " | ".join(str(row[label]) for label in labels["labels"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vfl", type=Path, default=Path("runs/nano-n60/summary.json"),
                        help="summary.json of `vfl locate` on nano (e.g. vfl locate --model nano --functions "
                             "count,ground --n 60 --window 4 --out runs/nano-n60)")
    parser.add_argument("--pool", type=int, default=200, help="pool size")
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=2, help="passes over each arm's data")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-n", type=int, default=30, help="held-out items per function")
    parser.add_argument("--eval-batch", type=int, default=16,
                        help="items answered together (greedy generate, left-padded; 1 answers one at a time)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", type=Path, default=Path("runs/vfl-select"))
    parser.add_argument("--model", default="nano",
                        help="the base model: nano, or a trained run's weights as nano:DIR (`vfl nano train`)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.vfl.exists():
        parser.error(f"{args.vfl} does not exist: run vfl locate --model nano (see --help) first")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    pool_path, truth = build_pool(out / "pool", args.pool)
    samples = lora.load_conversations(pool_path)
    vfls = load_vfls(args.vfl)
    selection = select(load(args.model, device=args.device), samples, vfls, out / "select",
                       {"model": args.model, "data": str(pool_path.resolve()), "vfl": vfls}, args.budget)
    labels = agreement(out / "select" / "profiles.jsonl", truth)
    (out / "agreement.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"VFL labels vs truth on {labels['n']} clean samples: {labels['accuracy']:.3f}")

    results = out / "results.jsonl"
    rows = [r for _, r in json_objects(results, "results")] if results.exists() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    items = held_out_items(FUNCTIONS, args.eval_n, 1, counts=COUNTS)

    def record(row: dict) -> None:
        rows.append(row)
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def scored(adapter) -> dict:
        summary, _ = evaluate(adapter, items, batch_size=args.eval_batch)
        accuracy = {f: summary[f]["accuracy"] for f in FUNCTIONS}
        return {"eval_batch": args.eval_batch, "accuracy": accuracy, "mean": statistics.mean(accuracy.values())}

    if ("none", 0) not in done:
        record({"arm": "none", "seed": 0, "samples": 0, "steps": 0, "train_s": 0.0, "share_of_full": None,
                "true_kinds": {}, **scored(load(args.model, device=args.device))})
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            if (arm, seed) in done:
                continue
            ids = set(arm_ids(arm, samples, truth, selection, seed))
            subset = [s for s in samples if s["id"] in ids]
            steps = max(1, round(args.epochs * len(subset) / args.batch_size))
            run = lora.LoraRun(rank=args.rank, alpha=2 * args.rank, lr=args.lr, steps=steps,
                               batch_size=args.batch_size, seed=seed, save_every=10)
            adapter = load(args.model, device=args.device)
            adapter_dir = lora.train(adapter, subset, list(range(adapter.num_layers)), run, out / f"{arm}-s{seed}",
                                     {"arm": arm, "ids": sorted(ids)})
            train_s = json.loads((out / f"{arm}-s{seed}" / "trainable.json").read_text())["train_s"]
            result = scored(lora.with_adapter(load(args.model, device=args.device), adapter_dir))
            full = next((r["mean"] for r in rows if r["arm"] == "full" and r["seed"] == seed), None)
            kinds = {k: sum(truth[i] == k for i in ids) for k in sorted(set(truth.values()))}
            record({"arm": arm, "seed": seed, "samples": len(subset), "steps": steps, "train_s": round(train_s, 1),
                    "share_of_full": result["mean"] / full if full else None, "true_kinds": kinds, **result})
    text = (table(rows) + f"\n\nVFL labels against the true ones: {labels['accuracy']:.3f} of {labels['n']} clean "
            "function samples\n\n" + confusion_table(labels))
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
