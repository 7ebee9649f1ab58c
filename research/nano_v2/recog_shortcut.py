"""Benchmark: does nano answer recognition by counting the objects?

"Is there a red circle?" should need the kind. In suite v1 the scene holds 1-3 distractors plus the kind when
the answer is yes, so one object always means "no" and four always "yes"; suite v2 as first written removed the
kind from B's scene (2-4 distractors, 3-5 objects with it), so two meant "no" and five "yes". A model can
score 0.64 (v1) or 0.70 (old v2) by counting alone. This scores a model's held-out recognition (seed 1, as
`vfl nano eval`) by the number of objects in the scene, and on the scenes whose count does not decide the
answer: where the model recognises, those match the rest; where it counts, they sit at chance.

  python research/nano_v2/recog_shortcut.py --model nano --out research/nano_v2/results/recog_shortcut.json
  python research/nano_v2/recog_shortcut.py --model nano:runs/recog-fixed --suites v2 --out runs/recog-fixed/shortcut.json

``--describe`` (a model trained with `--functions ...,describe`) also asks for a caption of every v2 item's image:
is the caption right, and would "is the kind in my caption?" answer the question? Where the captions answer and
the yes/no does not, the model reads the kinds but does not compare them with the question. ``--which`` (a model
trained with `which`) asks "Which shapes are <the asked colour>?" of the same images: does its answer hold the
asked shape?
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import vfl
from vfl.evaluate import answers, evaluate
from vfl.metrics import wilson
from vfl.nano.data import held_out_items, sample_maker
from vfl.nano.suite_v2 import DESCRIBE_QUESTION, describe_caption, which_shapes_question
from vfl.probes.questions import asked_kind


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


def caption_scores(captions: list[str], items: list, scenes: list) -> dict:
    """How often a caption names every object row by row as drawn (exact), and answers each item's question
    ("is the asked kind among the named ones?"), beside the model's own yes/no on the same items."""
    exact = answered = 0
    for caption, item, scene in zip(captions, items, scenes):
        named = {tuple(part.split()[:2]) for part in caption.split(",")}
        exact += caption.strip() == describe_caption(scene)
        shape, colour = asked_kind(item.question)
        answered += ("yes" if (colour, shape) in named else "no") == item.answer
    return {"caption exact": rate(exact, len(items)), "recognition from the caption": rate(answered, len(items))}


def which_questions(items: list) -> list[str]:
    return [which_shapes_question(asked_kind(item.question)[1]) for item in items]


def which_scores(said: list[str], items: list) -> dict:
    """How often the shapes named for the asked colour hold the asked shape exactly where the answer is yes."""
    hits = sum((asked_kind(item.question)[0] in {w.strip() for w in text.split(",")}) == (item.answer == "yes")
               for text, item in zip(said, items))
    return {"recognition from which shapes": rate(hits, len(items))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", help="nano (the shipped weights) or nano:DIR (a training run)")
    parser.add_argument("--suites", default="v1,v2")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--describe", action="store_true", help="also score captions of the v2 items' images")
    parser.add_argument("--which", action="store_true", help="also ask the v2 items which shapes have their colour")
    args = parser.parse_args()
    adapter = vfl.load(args.model)
    result = {"model": args.model, "n": args.n, "seed": args.seed, "suites": {}}
    for suite in args.suites.split(","):
        items, scenes = held_out_items(["recog"], args.n, args.seed, suite), recognition_scenes(suite, args.n, args.seed)
        _, records = evaluate(adapter, items, batch_size=args.batch_size)
        result["suites"][suite] = by_object_count(records, scenes)
        if args.describe and suite == "v2":
            captions = answers(adapter, [i.image for i in items], [DESCRIBE_QUESTION] * len(items), 48, args.batch_size)
            result["suites"][suite].update(caption_scores(captions, items, scenes))
            result["captions"] = captions[:20]
        if args.which and suite == "v2":
            said = answers(adapter, [i.image for i in items], which_questions(items), 24, args.batch_size)
            result["suites"][suite].update(which_scores(said, items))
            result["which"] = said[:20]
        for key, row in result["suites"][suite].items():
            print(f"{suite:3} {key:22} {row['accuracy']:.3f} ({row['ci'][0]:.2f}-{row['ci'][1]:.2f}) n={row['n']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
