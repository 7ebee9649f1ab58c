"""Issue 15, item 1: the VFL-LoRA paper's claims judged on the committed rows, skill by skill, by one rule.

Every variant is trained with the same seeds and scored on the same held-out items, so each claim "VFL-LoRA does
better than X" is judged seed by seed and on the seeds' items pooled: it *holds* when VFL-LoRA is better in every
seed and the 95% interval of the pooled difference lies above 0, *does not hold* when it is worse in every seed
and the interval lies below 0, and is *not decided* otherwise. The interval (Newcombe's hybrid score interval
for independent rates, `vfl.metrics.difference_interval`) is conservative here: the rows keep no per-item
outcomes to pair, and the items are shared. The mean ± sd and every seed's gap stand beside each verdict. A
comparison waits for seeds until both sides have ``--seeds`` of them (3). Text skills are not testable when the
untouched model answers fewer than ``--text-floor`` of the text questions (nano v2: 0.10).

    python research/paper_on_v2/lora_verdicts.py     # reads bench/results/vfl_lora_v2_cpu_SKILL.jsonl
writes bench/results/vfl_lora_v2_cpu_verdicts.json and prints the claims table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev

from vfl.metrics import difference_interval

ROOT = Path(__file__).resolve().parents[2]

RESULTS = ROOT / "bench" / "results"
SKILLS = ("ground-among", "recog-crowd")

# (claim, baseline variant, measure)
CLAIMS = [
    ("VFL-LoRA forgets less out of domain than full LoRA", "all", "forgetting"),
    ("VFL-LoRA beats full LoRA in-domain", "all", "in_domain"),
    ("VFL-LoRA beats the reversed VFL in-domain", "reversed", "in_domain"),
    ("VFL-LoRA beats random layers of its size in-domain", "random", "in_domain"),
    ("VFL-LoRA forgets less than random layers of its size", "random", "forgetting"),
    ("VFL-LoRA keeps text skills better than full LoRA", "all", "text"),
]


def items(row: dict, what: str) -> tuple[int, int]:
    """(right, scored) behind a measure: the in-domain items, nano's four functions' items (what is kept out of
    domain), or the text questions."""
    scored = [row["in_domain"]] if what == "in_domain" else [row["text"]] if what == "text" else row["ood"].values()
    return (sum(round(s["accuracy"] * s["n"]) for s in scored), sum(s["n"] for s in scored))


def counts(rows: list[dict], what: str) -> tuple[int, int]:
    """(right, scored) summed over rows: one seed's row, or all seeds' items pooled."""
    return tuple(map(sum, zip(*(items(r, what) for r in rows))))


def rate(rows: list[dict], what: str) -> float:
    right, scored = counts(rows, what)
    return right / scored


def judge(rows: list[dict], baseline: str, what: str, seeds: int, text_floor: float) -> dict:
    """Each seed's gap and the pooled interval compare what VFL-LoRA and the baseline get right (in domain,
    kept out of domain, kept of the text questions), so a positive gap is VFL-LoRA's advantage for every
    measure; the values beside them are the measure itself: accuracy, or the fall from the untouched model
    (forgetting, the text drop)."""
    base = next(r for r in rows if r["variant"] == "none")
    by_seed = {(r["variant"], r["seed"]): r for r in rows}
    paired = sorted(s for v, s in by_seed if v == "vfl" and (baseline, s) in by_seed)
    ours, theirs = [by_seed["vfl", s] for s in paired], [by_seed[baseline, s] for s in paired]

    def value(row):
        return rate([row], what) if what == "in_domain" else rate([base], what) - rate([row], what)

    gaps = [round(rate([a], what) - rate([b], what), 4) for a, b in zip(ours, theirs)]
    result = {"baseline": baseline, "measure": what, "seeds": paired, "vfl": summarise(list(map(value, ours))),
              "baseline_value": summarise(list(map(value, theirs))), "gaps": gaps}
    if paired:
        result["pooled_ci"] = [round(x, 4) for x in difference_interval(*counts(ours, what), *counts(theirs, what))]
    if what == "text" and base["text"]["accuracy"] < text_floor:
        result["verdict"] = "not testable"
        result["why"] = f"the untouched model answers {base['text']['accuracy']:.2f} of the text questions"
    elif len(paired) < seeds:
        result["verdict"] = "waits for seeds"
    elif all(g > 0 for g in gaps) and result["pooled_ci"][0] > 0:
        result["verdict"] = "holds"
    elif all(g < 0 for g in gaps) and result["pooled_ci"][1] < 0:
        result["verdict"] = "does not hold"
    else:
        result["verdict"] = "not decided"
    return result


def summarise(values: list[float]) -> list[float] | None:
    """[mean, sd] over seeds (sd 0 for one seed), None for none."""
    if not values:
        return None
    return [round(mean(values), 4), round(stdev(values), 4) if len(values) > 1 else 0.0]


def verdicts(skills: dict[str, list[dict]], seeds: int, text_floor: float) -> dict:
    judged = []
    for skill, rows in skills.items():
        shares = {r["variant"]: r["share"] for r in rows}
        if "vfl" in shares and "all" in shares:
            verdict = "holds" if shares["vfl"] < shares["all"] else "does not hold"
        else:
            verdict = "waits for seeds"
        judged.append({"claim": "VFL-LoRA trains fewer parameters than full LoRA", "skill": skill,
                       "vfl": shares.get("vfl"), "baseline_value": shares.get("all"), "verdict": verdict})
        for claim, baseline, what in CLAIMS:
            judged.append({"claim": claim, "skill": skill, **judge(rows, baseline, what, seeds, text_floor)})
    return {"rule": f"holds: VFL-LoRA better in each of >= {seeds} seeds and the pooled items' 95% interval above 0; "
                    "does not hold: worse in each and the interval below 0; else not decided",
            "text_floor": text_floor, "claims": judged}


LABEL = {"in_domain": "in-domain", "forgetting": "forgetting", "text": "text drop"}


def numbers(entry: dict) -> str:
    if "why" in entry:
        return entry["why"]
    if entry["baseline_value"] is None or entry["vfl"] is None:
        return "–"
    if "measure" not in entry:
        return f"{100 * entry['vfl']:.2f}% vs {100 * entry['baseline_value']:.2f}%"
    (a, sa), (b, sb) = entry["vfl"], entry["baseline_value"]
    gaps = ", ".join(f"{g + 0.0:+.3f}" for g in entry["gaps"])
    low, high = entry["pooled_ci"]
    return (f"{LABEL[entry['measure']]} {a:.3f} ± {sa:.3f} vs {b:.3f} ± {sb:.3f}; per seed "
            f"({', '.join(map(str, entry['seeds']))}) VFL-LoRA ahead by {gaps}; "
            f"pooled 95% CI {low:+.3f} to {high:+.3f}")


def markdown(result: dict) -> str:
    lines = ["| the paper's claim | skill | on nano v2 | verdict |", "|---|---|---|---|"]
    lines += [f"| {e['claim']} | {e['skill']} | {numbers(e)} | {e['verdict']} |" for e in result["claims"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", default=",".join(SKILLS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where vfl_lora_v2_cpu_SKILL.jsonl lie")
    parser.add_argument("--seeds", type=int, default=3, help="seeds both sides need before a claim is judged")
    parser.add_argument("--text-floor", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=RESULTS / "vfl_lora_v2_cpu_verdicts.json")
    args = parser.parse_args()
    skills = {}
    for skill in args.skills.split(","):
        path = args.results / f"vfl_lora_v2_cpu_{skill}.jsonl"
        if not path.is_file():
            sys.exit(f"error: no rows for skill {skill} at {path}")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not any(r["variant"] == "none" for r in rows):
            sys.exit(f"error: {path} lacks the untouched row (variant none) that forgetting is measured from")
        skills[skill] = rows
    result = verdicts(skills, args.seeds, args.text_floor)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
