"""Issue 15, item 4: does fine-tuning the language model move, widen or spread where nano reads each function?

Reads `research/paper_on_v2/regimes.sh`'s folder (bench/nano_recipes.py: the same data trained as projector only,
LoRA on every layer and full fine-tuning, each located with the same probes) and sets every fine-tuned regime
against projector-only, function by function: its class and VFL band, and its read profile (`vfl compare`: the
windows' score-weighted centre on the depth axis and the spread around it). The regimes were located on the same
probes, so one seeded bootstrap resamples the same probes for both (a paired bootstrap); a difference is called
when its 95% interval excludes 0: *moved* deeper or shallower (centre), *widened* or *narrowed* (spread).

    python research/paper_on_v2/regime_verdicts.py [REGIMES]   # REGIMES defaults to $HOME/vfl-runs/regimes
writes bench/results/regimes_v2_cpu_verdicts.json, the regimes' locate summaries (regimes_v2_cpu_locate_NAME.json)
and docs/regimes-v2.png (the bands and profiles on one depth axis), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from vfl.compare import add_intervals, compare, interval95, plot, profile_draws, run_records
from vfl.decision import NAMES, span_text
from vfl.errors import VflError
from vfl.probes.schema import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
BASE = "projector"


def change(diff: np.ndarray, up: str, down: str) -> tuple[list[float], str]:
    low, high = interval95(diff)
    return [low, high], up if low > 0 else down if high < 0 else "same"


def verdicts(folder: Path) -> dict:
    regimes = [p.name for p in sorted(folder.iterdir()) if (p / "locate" / "summary.json").is_file()]
    if BASE not in regimes or len(regimes) < 2:
        raise SystemExit(f"error: {folder} holds located regimes {regimes or 'none'}; it needs {BASE} and another")
    regimes = [BASE] + [r for r in ("lora", "full") if r in regimes] + \
        [r for r in regimes if r not in (BASE, "lora", "full")]
    # the summaries, not the folders: the records are read and resampled once, here
    rows = {row["name"]: row for row in
            compare([folder / r / "locate" / "summary.json" for r in regimes], regimes)["runs"]}
    records = {r: run_records(folder / r / "locate") for r in regimes}
    draws = {r: profile_draws(records[r], rows[r]["num_layers"]) for r in regimes}
    for r in regimes:
        add_intervals(rows[r], draws[r])
    ids = {r: sorted({x["id"] for x in records[r]}) for r in regimes}
    accuracy = {}
    scored = folder / "results.jsonl"
    for line in scored.read_text().splitlines() if scored.is_file() else []:
        row = json.loads(line)
        accuracy.setdefault(row["recipe"], {})[row["suite"]] = {f: row[f] for f in FUNCTIONS}
    out = {"base": BASE, "regimes": {}, "accuracy": accuracy}
    for regime in regimes:
        functions = {}
        for f in FUNCTIONS:
            entry = rows[regime]["functions"].get(f)
            if entry is None:
                continue
            mine = {"class": entry["class"], "vfl": entry["vfl"], "profile": entry.get("profile")}
            base = rows[BASE]["functions"].get(f) or {}
            if regime != BASE and mine["profile"] and base.get("profile"):
                if ids[regime] != ids[BASE]:
                    raise SystemExit(f"error: {regime} and {BASE} were located on different probes")
                diff = draws[regime][f] - draws[BASE][f]
                mine["centre_change"], mine["moved"] = change(diff[:, 0], "deeper", "shallower")
                mine["spread_change"], mine["widened"] = change(diff[:, 1], "wider", "narrower")
                mine["centre_difference"] = round(mine["profile"]["centre"] - base["profile"]["centre"], 3)
                mine["spread_difference"] = round(mine["profile"]["spread"] - base["profile"]["spread"], 3)
            functions[f] = mine
        out["regimes"][regime] = functions
    out["compared"] = {"paper_order": list(FUNCTIONS), "runs": list(rows.values())}
    return out


def cell(entry: dict | None) -> str:
    if entry is None:
        return "not run"
    band = span_text(entry["vfl"]) if entry["vfl"] else entry["class"]
    profile = entry["profile"]
    text = band + (f"; {profile['centre']:.2f} ± {profile['spread']:.2f}" if profile else "")
    if "moved" in entry:
        text += (f"; centre {entry['centre_difference']:+.2f} ({entry['centre_change'][0]:+.2f} to "
                 f"{entry['centre_change'][1]:+.2f}): {entry['moved']}; spread {entry['spread_difference']:+.2f} "
                 f"({entry['spread_change'][0]:+.2f} to {entry['spread_change'][1]:+.2f}): {entry['widened']}")
    return text


def markdown(result: dict) -> str:
    lines = ["| regime | " + " | ".join(NAMES[f] for f in FUNCTIONS) + " |", "|---|" + "---|" * len(FUNCTIONS)]
    for regime, functions in result["regimes"].items():
        lines.append(f"| {regime} | " + " | ".join(cell(functions.get(f)) for f in FUNCTIONS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("regimes", type=Path, nargs="?", default=Path.home() / "vfl-runs" / "regimes")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "regimes-v2.png")
    args = parser.parse_args()
    if not args.regimes.is_dir():
        sys.exit(f"error: {args.regimes} is no folder of bench/nano_recipes.py (regimes.sh) runs")
    try:
        result = verdicts(args.regimes)
    except VflError as error:
        sys.exit(f"error: {error}")
    compared = result.pop("compared")
    (args.results / "regimes_v2_cpu_verdicts.json").write_text(json.dumps(result, indent=2) + "\n")
    for regime in result["regimes"]:
        shutil.copy(args.regimes / regime / "locate" / "summary.json", args.results / f"regimes_v2_cpu_locate_{regime}.json")
    plot(compared, args.figure)
    print(markdown(result))
    print(f"wrote {args.results / 'regimes_v2_cpu_verdicts.json'} and {args.figure}")


if __name__ == "__main__":
    main()
