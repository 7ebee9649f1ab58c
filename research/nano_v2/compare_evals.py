"""Does a candidate nano beat the shipped one? Issue 44's rule: ship when a run beats the shipped nano on all four
v1 functions with intervals. Both `vfl nano eval` record files must hold the same items (the same --suite, --n and
seed); per function this prints each accuracy with its 95% Wilson interval, whether the candidate's interval lies
wholly above the shipped one's (the rule), and the exact paired test over the items the two answer differently
(a finer view the rule does not use). Writes the rows as JSON with --out.

    python research/nano_v2/compare_evals.py RUN.records.jsonl SHIPPED.records.jsonl [--out beats.json] [--check]

`ship_check.sh RUN` runs both evaluations, this comparison, and ships RUN only where it beats.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vfl.decision import NAMES, accuracy
from vfl.errors import VflError
from vfl.jsonl import json_objects
from vfl.metrics import paired_p_value
from vfl.probes.schema import FUNCTIONS


def compare(candidate: list[dict], shipped: list[dict]) -> dict:
    """Per function in both: accuracies, intervals, paired gains/losses and p; ``beats_all`` over the four."""
    ours, theirs = ({r["id"]: r for r in records} for records in (candidate, shipped))
    if set(ours) != set(theirs):
        raise VflError("the two record files hold different items: evaluate both with the same --suite, --n and seed")
    rows = {}
    for function in FUNCTIONS:
        ids = [i for i, r in ours.items() if r["function"] == function]
        if not ids:
            continue
        a, b = (accuracy([records[i] for i in ids]) for records in (ours, theirs))  # as `vfl nano eval` scores
        gains = sum(bool(ours[i]["correct"]) and not theirs[i]["correct"] for i in ids)
        losses = sum(bool(theirs[i]["correct"]) and not ours[i]["correct"] for i in ids)
        rows[function] = {"n": len(ids), "candidate": a["accuracy"], "candidate_ci": a["ci"],
                          "shipped": b["accuracy"], "shipped_ci": b["ci"], "beats": a["ci"][0] > b["ci"][1],
                          "gains": gains, "losses": losses, "p_paired": paired_p_value(gains, losses)}
    return {"functions": rows, "beats_all": len(rows) == len(FUNCTIONS) and all(r["beats"] for r in rows.values())}


def text(result: dict) -> str:
    lines = []
    for function, r in result["functions"].items():
        lines.append(f"{NAMES[function]:11s} candidate {r['candidate']:.3f} ({r['candidate_ci'][0]:.3f}-"
                     f"{r['candidate_ci'][1]:.3f})  shipped {r['shipped']:.3f} ({r['shipped_ci'][0]:.3f}-"
                     f"{r['shipped_ci'][1]:.3f})  n {r['n']}  +{r['gains']}/-{r['losses']} p {r['p_paired']:.3g}  "
                     + ("beats" if r["beats"] else "does not beat"))
    lines.append(f"beats on all four: {result['beats_all']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", type=Path, help="the run's `vfl nano eval` records (.records.jsonl)")
    parser.add_argument("shipped", type=Path, help="the shipped nano's records on the same items")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the candidate beats it on all four")
    args = parser.parse_args(argv)
    try:
        result = compare(*([record for _, record in json_objects(path, what)]
                           for path, what in ((args.candidate, "candidate records"), (args.shipped, "shipped records"))))
    except VflError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.check and not result["beats_all"] else 0


if __name__ == "__main__":
    sys.exit(main())
