"""Issue 15's figures from the committed rows: VFL-LoRA's trade-off (in-domain skill against forgetting, one
panel a skill, every seed a dot, the mean ± sd a cross) and VFL-select's arms per function.

    python research/paper_on_v2/figures.py        # docs/vfl-lora-v2.png, docs/vfl-select-v2.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from vfl_lora import RULES, ood_mean  # noqa: E402
from vfl_select import ARMS  # noqa: E402

from vfl.decision import span_label  # noqa: E402
from vfl.nano.sample import FUNCTIONS  # noqa: E402
from vfl.plots import finish, new_figure  # noqa: E402

SKILLS = {"ground-among": "grounding among 1-3 distractors", "recog-crowd": "recognition in 7-9-object scenes"}
VARIANT = {"vfl": "VFL-LoRA", "all": "full LoRA", "reversed": "reversed VFL", "random": "random layers"}
COLOURS = {"vfl": "tab:red", "all": "tab:blue", "reversed": "tab:green", "random": "tab:gray",
           "none": "black", "full": "tab:blue", "expert": "tab:purple", "oracle": "tab:orange"}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(values: list[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def plot_lora(skills: dict[str, list[dict]], path: Path | None = None):
    """One panel a skill: x the forgetting (the fall of nano's own four functions' mean accuracy from the
    untouched model's), y the in-domain accuracy; up and to the left is better."""
    fig = new_figure(figsize=(5.6 * len(skills), 5.2))
    for i, (skill, rows) in enumerate(skills.items()):
        ax = fig.add_subplot(1, len(skills), i + 1)
        base = next(r for r in rows if r["variant"] == "none")
        ax.plot([0], [base["in_domain"]["accuracy"]], "*", color="black", markersize=13, label="untouched")
        for variant in RULES:
            mine = [r for r in rows if r["variant"] == variant]
            if not mine:
                continue
            xs = [ood_mean(base) - ood_mean(r) for r in mine]
            ys = [r["in_domain"]["accuracy"] for r in mine]
            colour = COLOURS[variant]
            ax.plot(xs, ys, "o", color=colour, alpha=0.35, markersize=5)
            layers = "seeded" if variant == "random" else span_label([int(x) for x in mine[0]["layers"].split(",")])
            label = f"{VARIANT[variant]} ({layers}, {100 * mine[0]['share']:.1f}%)"
            ax.errorbar(mean(xs), mean(ys), xerr=spread(xs), yerr=spread(ys), fmt="P", color=colour,
                        markersize=9, capsize=3, label=label)
        seeds = sorted({r["seed"] for r in rows if r["variant"] != "none"})
        ax.set_title(f"{SKILLS.get(skill, skill)}\n(seeds {', '.join(map(str, seeds))}; dots: seeds)", fontsize=10)
        ax.set_xlabel("forgetting: fall of nano's four-function mean")
        ax.set_ylabel("in-domain accuracy")
        ax.axvline(0, color="black", linewidth=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    return finish(fig, path)


def plot_select(rows: list[dict], path: Path | None = None):
    """Held-out accuracy per function and its mean for each arm (bars: mean over seeds, ticks: sd)."""
    fig = new_figure(figsize=(9, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    arms = [a for a in ("none",) + ARMS if any(r["arm"] == a for r in rows)]
    groups = [*FUNCTIONS, "mean"]
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        values = [[r["accuracy"][g] if g != "mean" else r["mean"] for r in mine] for g in groups]
        xs = [g + (j - (len(arms) - 1) / 2) * width for g in range(len(groups))]
        seeds = f"{len(mine)} seed" + "s" * (len(mine) > 1)
        label = "untouched" if arm == "none" else f"{arm} ({mine[0]['samples']} samples, {seeds})"
        ax.bar(xs, [mean(v) for v in values], width, yerr=[spread(v) for v in values] if len(mine) > 1 else None,
               capsize=2,
               color=COLOURS.get(arm, "tab:brown"), label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("VFL-select on nano v2: 20% of the pool against the full pool and other picks", fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return finish(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    skills = {skill: rows_of(args.results / f"vfl_lora_v2_cpu_{skill}.jsonl") for skill in SKILLS
              if (args.results / f"vfl_lora_v2_cpu_{skill}.jsonl").is_file()}
    select = args.results / "vfl_select_v2_cpu.jsonl"
    if not skills and not select.is_file():
        sys.exit(f"error: no nano v2 VFL-LoRA or VFL-select rows in {args.results}")
    args.out.mkdir(parents=True, exist_ok=True)
    if skills:
        plot_lora(skills, args.out / "vfl-lora-v2.png")
        print(f"wrote {args.out / 'vfl-lora-v2.png'}")
    if select.is_file():
        plot_select(rows_of(select), args.out / "vfl-select-v2.png")
        print(f"wrote {args.out / 'vfl-select-v2.png'}")


if __name__ == "__main__":
    main()
