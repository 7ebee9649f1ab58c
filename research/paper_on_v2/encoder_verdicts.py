"""Issue 15, item 3: the layer-selection paper's three findings judged on `vfl nano study`'s variants, one by one.

Every variant is scored on the same held-out items, so each claim "X beats Y on a function" is judged on paired
outcomes: the items X answers and Y misses against the reverse (exact one-sided McNemar test, Holm-corrected
within a finding), each difference with its 95% interval (Newcombe's paired score interval, not corrected). A
comparison *holds* when the claim's direction passes at 0.05, is *reversed* when the opposite direction does, and
is *not decided* otherwise. A finding holds when all its comparisons hold, does
not hold when one is reversed, holds in part when some hold and none is reversed, is not decided when none is
decided, and is not testable when no variant reads its functions (every variant below ``--floor``).

    python research/paper_on_v2/encoder_verdicts.py [STUDY]   # STUDY: a `vfl nano study --out` folder
writes bench/results/encoder_layers_v2_cpu_outcomes.jsonl (one line an item and variant: what the verdicts rest
on) and encoder_layers_v2_cpu_verdicts.json; ``--outcomes`` judges a committed outcomes file instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vfl.metrics import holm, paired_difference_interval, paired_p_value, wilson

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
ALPHA = 0.05


def read_outcomes(study: Path) -> list[dict]:
    """One row an item and variant, from each variant's eval.records.jsonl in a study folder."""
    layers = {name: row["layers"] for name, row in json.loads((study / "study.json").read_text())["variants"].items()}
    rows = []
    for name in layers:
        for line in (study / name / "eval.records.jsonl").read_text().splitlines():
            record = json.loads(line)
            rows.append({"variant": name, "layers": layers[name], "id": record["id"], "function": record["function"],
                         "correct": bool(record["correct"])})
    return rows


def role(variants: list[str]) -> dict[str, list[str]]:
    """The variants by what they stand for: shallow, middle and deep representatives, the last layer, fusion."""
    roles = {k: [v for v in variants if v.startswith(k + "-")] for k in ("shallow", "middle", "deep", "last", "fusion")}
    missing = [k for k, names in roles.items() if not names]
    if missing:
        raise SystemExit(f"error: the study lacks the {', '.join(missing)} variant(s); it has {', '.join(variants)}")
    return roles


def compare(outcomes: list[dict], better: str, worse: str, functions: list[str]) -> dict:
    """Paired outcomes of two variants over the items of ``functions``."""
    def answers(variant):
        return {r["id"]: r["correct"] for r in outcomes if r["variant"] == variant and r["function"] in functions}

    a, b = answers(better), answers(worse)
    if a.keys() != b.keys():
        raise SystemExit(f"error: {better} and {worse} were not scored on the same items")
    gains = sum(a[i] and not b[i] for i in a)
    losses = sum(b[i] and not a[i] for i in a)
    both = sum(a[i] and b[i] for i in a)
    n = len(a)
    interval = paired_difference_interval(both, gains, losses, n - both - gains - losses)
    return {"better": better, "worse": worse, "functions": functions, "n": n,
            "accuracy": [round(sum(a.values()) / n, 4), round(sum(b.values()) / n, 4)],
            "difference": round((gains - losses) / n, 4), "difference_ci": [round(x, 4) for x in interval],
            "gains": gains, "losses": losses,
            "p": paired_p_value(gains, losses), "p_reverse": paired_p_value(losses, gains)}


def judge(comparisons: list[dict]) -> str:
    """Holm within the finding, then the finding's verdict from its comparisons'."""
    for c, p, q in zip(comparisons, holm([c["p"] for c in comparisons]), holm([c["p_reverse"] for c in comparisons])):
        c["p_holm"], c["p_reverse_holm"] = round(p, 6), round(q, 6)
        c["outcome"] = "holds" if p < ALPHA else "reversed" if q < ALPHA else "not decided"
    outcomes = {c["outcome"] for c in comparisons}
    if outcomes == {"holds"}:
        return "holds"
    if "reversed" in outcomes:
        return "does not hold"
    return "holds in part" if "holds" in outcomes else "not decided"


def verdicts(outcomes: list[dict], floor: float) -> dict:
    names = list(dict.fromkeys(r["variant"] for r in outcomes))
    functions = list(dict.fromkeys(r["function"] for r in outcomes))
    roles = role(names)
    deep_side = roles["deep"] + roles["last"]
    early = roles["shallow"] + roles["middle"]
    singles = early + deep_side
    table = {}
    for name in names:
        table[name] = {}
        for f in functions:
            mine = [r["correct"] for r in outcomes if r["variant"] == name and r["function"] == f]
            table[name][f] = {"accuracy": round(sum(mine) / len(mine), 4), "n": len(mine),
                              "ci": [round(x, 4) for x in wilson(sum(mine), len(mine))]}
    findings = [
        ("deep layers are needed for OCR", ["ocr"], [(d, e) for d in deep_side for e in early]),
        ("shallow and middle layers beat deep ones on counting", ["count"], [(e, d) for e in early for d in deep_side]),
        ("shallow and middle layers beat deep ones on grounding (positioning, localisation)", ["ground"],
         [(e, d) for e in early for d in deep_side]),
        ("a light fusion of one shallow, middle and deep layer beats single layers", functions,
         [(fusion, s) for fusion in roles["fusion"] for s in singles]),
    ]
    judged = []
    for claim, on, pairs in findings:
        best = max(table[v][f]["accuracy"] for v in names for f in on)
        comparisons = [compare(outcomes, x, y, on) for x, y in pairs]
        verdict = "not testable" if best < floor else judge(comparisons)
        if verdict == "not testable":
            for c in comparisons:
                c["outcome"] = "not testable"
        judged.append({"claim": claim, "functions": on, "verdict": verdict, "best_accuracy": round(best, 4),
                       "comparisons": comparisons})
    return {"alpha": ALPHA, "floor": floor, "variants": table, "findings": judged}


def markdown(result: dict) -> str:
    lines = ["| the paper's finding | comparisons (accuracy, paired difference with its 95% interval, Holm p) | verdict |",
             "|---|---|---|"]
    for finding in result["findings"]:
        cells = "; ".join(f"{c['better']} vs {c['worse']}: {c['accuracy'][0]:.2f} vs {c['accuracy'][1]:.2f}, "
                          f"{c['difference']:+.2f} ({c['difference_ci'][0]:+.2f} to {c['difference_ci'][1]:+.2f}), "
                          f"p {c.get('p_holm', 1.0):.2g}"
                          for c in finding["comparisons"])
        lines.append(f"| {finding['claim']} | {cells} | {finding['verdict']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, nargs="?", help="a `vfl nano study --out` folder")
    parser.add_argument("--outcomes", type=Path, default=RESULTS / "encoder_layers_v2_cpu_outcomes.jsonl",
                        help="written from STUDY when it is given, read otherwise")
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder_layers_v2_cpu_verdicts.json")
    parser.add_argument("--floor", type=float, default=0.10,
                        help="a finding on functions no variant answers at this rate is not testable")
    args = parser.parse_args()
    if args.study is not None:
        if not (args.study / "study.json").is_file():
            sys.exit(f"error: {args.study} is no finished `vfl nano study` folder (it lacks study.json)")
        outcomes = read_outcomes(args.study)
        args.outcomes.write_text("".join(json.dumps(r) + "\n" for r in outcomes))
    elif args.outcomes.is_file():
        outcomes = [json.loads(line) for line in args.outcomes.read_text().splitlines() if line.strip()]
    else:
        sys.exit(f"error: no study folder given and no outcomes at {args.outcomes}")
    result = verdicts(outcomes, args.floor)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
