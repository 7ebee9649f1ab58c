"""Benchmark: the answer loss of a model that does not look at the image, per function (suite v1).

A function's training loss (`function_losses.json`, each sample's token mean over its answer and <|im_end|>)
means nothing until it is set against what the answers' own distribution gives away: the best image-blind
predictor knows each answer's prior and, token by token, the answers that share the prefix written so far.
A loss at this floor says the model reads nothing of the image for that function, however low it looks:
run b's OCR loss ended at 1.88 a token, and the floor for v1's 60 words is 1.89.

Recognition answers yes or no (half each), counting 1 to MAX_COUNT (uniform), OCR one of v1's `WORDS`
(uniform), as suite v1 draws them; grounding's boxes have no closed answer list and are left out.
``--run FOLDER`` sets a `vfl nano train` run's per-function losses (suite v1, the tokenizer's answers) against
them: each block of ``--block`` steps, its mean and how many standard errors (of its steps' means) below the floor.

  python research/nano_v2/blind_floor.py [--out floor.json] [--run $HOME/vfl-runs/nano-v2d --block 50]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from vfl.probes.render import MAX_COUNT, WORDS

ANSWERS = {"recog": ["yes", "no"], "count": [str(n) for n in range(1, MAX_COUNT + 1)], "ocr": list(WORDS)}


def blind_floor(sequences: list[list[int]]) -> float:
    """The mean over equally likely answers (token ids) of each answer's token-mean loss under the best blind
    predictor: p(token | prefix) = the share of the answers with that prefix that continue with that token."""
    total = 0.0
    for answer in sequences:
        losses = []
        for t, token in enumerate(answer):
            sharing = [s for s in sequences if s[:t] == answer[:t]]
            losses.append(-math.log(sum(len(s) > t and s[t] == token for s in sharing) / len(sharing)))
        total += sum(losses) / len(losses)
    return total / len(sequences)


def below_floor(losses: list, floor: float, block: int) -> list[dict]:
    """Per block of ``block`` steps of one function's curve (None: a step without the function): the first
    step, the mean, and (floor - mean) in standard errors of the block's step means (None under two steps)."""
    rows = []
    for start in range(0, len(losses), block):
        values = [v for v in losses[start:start + block] if v is not None]
        if values:
            mean = statistics.fmean(values)
            spread = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
            rows.append({"from_step": start + 1, "mean": round(mean, 4),
                         "se_below": round((floor - mean) / spread, 2) if spread else None})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the floors as JSON")
    parser.add_argument("--run", type=Path, help="a run folder whose function_losses.json to set against the floors")
    parser.add_argument("--block", type=int, default=50, help="steps a block (--run)")
    args = parser.parse_args(argv)
    if args.run and not (args.run / "function_losses.json").is_file():
        parser.error(f"--run {args.run}: no function_losses.json there (not a `vfl nano train` run, or before its "
                     "first save)")
    from transformers import AutoTokenizer

    from vfl.nano.batches import answer_ids
    from vfl.nano.parts import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    floors = {function: round(blind_floor([answer_ids(tokenizer, a) for a in answers]), 4)
              for function, answers in ANSWERS.items()}
    for function, floor in floors.items():
        print(f"{function:6s} {floor:.4f} a token ({len(ANSWERS[function])} answers)")
    if args.run:
        curves = json.loads((args.run / "function_losses.json").read_text())
        for function in floors:
            for row in below_floor(curves.get(function, []), floors[function], args.block):
                print(f"{function:6s} steps {row['from_step']:5d}+  {row['mean']:.3f}  "
                      f"{row['se_below'] if row['se_below'] is not None else '-'} se below {floors[function]:.3f}")
    if args.out:
        args.out.write_text(json.dumps({"floors": floors, "answers": {f: len(a) for f, a in ANSWERS.items()}},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
