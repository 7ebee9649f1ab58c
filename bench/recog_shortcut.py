"""Benchmark: does nano answer recognition by counting the objects?

"Is there a red circle?" should need the kind. In suite v1 the scene holds 1-3 distractors plus the kind when
the answer is yes, so one object always means "no" and four always "yes"; suite v2 as first written removed the
kind from B's scene (2-4 distractors, 3-5 objects with it), so two meant "no" and five "yes". A model can
score 0.64 (v1) or 0.70 (old v2) by counting alone. This scores a model's held-out recognition (seed 1, as
`vfl nano eval`) by the number of objects in the scene, and on the scenes whose count does not decide the
answer: where the model recognises, those match the rest; where it counts, they sit at chance.

  python bench/recog_shortcut.py --model nano --out bench/results/recog_shortcut.json
  python bench/recog_shortcut.py --model nano:runs/recog-fixed --suites v2 --out runs/recog-fixed/shortcut.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import vfl
from vfl.evaluate import evaluate
from vfl.metrics import wilson
from vfl.nano.data import held_out_items, sample_maker


def rate(hits: int, n: int) -> dict:
    return {"accuracy": round(hits / n, 3), "n": n, "ci": [round(v, 3) for v in wilson(hits, n)]}


def recognition_scenes(suite: str, n: int, seed: int) -> list:
    """The drawn objects of the held-out recognition items `held_out_items` makes (same seeds, same order)."""
    options = {"split": "held_out"} if suite == "v2" else {}
    return [sample_maker(suite)("recog", i, seed, **options).scene for i in range(n)]


def by_object_count(records: list[dict], scenes: list) -> dict:
    """Accuracy per number of objects, and on the scenes whose number of objects comes with one answer only
    among these items ("count decides") against the rest."""
    answers_by_count = defaultdict(set)
    for record, scene in zip(records, scenes):
        answers_by_count[len(scene)].add(record["target"])
    tally = defaultdict(lambda: [0, 0])
    for record, scene in zip(records, scenes):
        decides = len(answers_by_count[len(scene)]) == 1
        for key in (f"{len(scene)} objects", "count decides" if decides else "count does not decide", "all"):
            tally[key][0] += record["correct"]
            tally[key][1] += 1
    return {key: rate(*tally[key]) for key in sorted(tally)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", help="nano (the shipped weights) or nano:DIR (a training run)")
    parser.add_argument("--suites", default="v1,v2")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    adapter = vfl.load(args.model)
    result = {"model": args.model, "n": args.n, "seed": args.seed, "suites": {}}
    for suite in args.suites.split(","):
        _, records = evaluate(adapter, held_out_items(["recog"], args.n, args.seed, suite), batch_size=args.batch_size)
        result["suites"][suite] = by_object_count(records, recognition_scenes(suite, args.n, args.seed))
        for key, row in result["suites"][suite].items():
            print(f"{suite:3} {key:22} {row['accuracy']:.3f} ({row['ci'][0]:.2f}-{row['ci'][1]:.2f}) n={row['n']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
