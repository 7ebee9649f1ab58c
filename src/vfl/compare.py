"""`vfl compare`: the VFL bands of several locate runs (models, training regimes, windows) on one
normalised depth axis (layer / number of layers), with each run's order of functions checked against
the paper's (recognition < counting < grounding < OCR), and each function's read profile (where along the
depth swaps move its answer, and how widely). Reads existing run files only: summary.json, and a run
folder's results.jsonl for the profiles' bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vfl.errors import VflError
from vfl.probes.schema import FUNCTIONS
from vfl.decision import NAMES, load_summary, span_text
from vfl.plots import finish, new_figure

PAPER_ORDER = FUNCTIONS  # recog < count < ground < ocr (Shi, Yu, Yang 2025, Qwen2.5-VL-7B and others)
# Where the paper reads each function on Qwen2.5-VL-7B (28 layers), as secondary notes report it (approximate):
# recognition spread over layers 0-10, counting peaking at 12, grounding at 18, OCR at 22.
PAPER_QWEN25_7B = {"model": "Qwen2.5-VL-7B", "num_layers": 28, "window": "–",
                   "functions": {"recog": {"vfl": list(range(11))}, "count": {"vfl": [12]}, "ground": {"vfl": [18]},
                                 "ocr": {"vfl": [22]}}}
PAPER_NAME = "Qwen2.5-VL-7B (paper, reported)"


def _centre_and_spread(means: np.ndarray, middles: np.ndarray) -> np.ndarray:
    """Window means (last axis: windows; negative ones weigh nothing) -> (centre, spread) on the depth axis
    given the windows' middles; NaN where no window moves the answer."""
    weights = np.clip(means, 0.0, None)
    total = weights.sum(axis=-1)
    safe = np.where(total > 0, total, 1.0)
    centre = (weights * middles).sum(axis=-1) / safe
    spread = np.sqrt((weights * (middles - centre[..., None]) ** 2).sum(axis=-1) / safe)
    return np.where((total > 0)[..., None], np.stack([centre, spread], axis=-1), np.nan)


def _middles(layer_lists: list, depth: int) -> np.ndarray:
    return np.array([(min(layers) + max(layers) + 1) / 2 / depth for layers in layer_lists])


def read_profile(windows: list[dict], depth: int) -> dict | None:
    """Where a function is read, from every window's mean normalised score (0: the answer as without a swap,
    1: as with every layer swapped): the windows' score-weighted centre on the depth axis and the weighted
    spread around it. Unlike the VFL band it also places a function read across the depth, so regimes or
    models can be told apart by whether a function moved, widened or spread."""
    means = np.array([w.get("score_mean") or 0.0 for w in windows])
    centre, spread = _centre_and_spread(means, _middles([w["layers"] for w in windows], depth))
    return None if np.isnan(centre) else {"centre": round(float(centre), 3), "spread": round(float(spread), 3)}


def profile_draws(records: list[dict], depth: int, draws: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Per function, ``draws`` bootstrap resamples of its probes (with replacement, seeded: the same records
    give the same draws), each summarised as its read profile's (centre, spread): an array of shape (draws, 2),
    NaN where a draw moves nothing. Two runs located on the same probes get the same resamples (a paired
    bootstrap), so their draws' differences give the interval of a difference."""
    out = {}
    for function in FUNCTIONS:
        mine = [r for r in records if r["function"] == function and r.get("layer") is not None]
        if not mine:
            continue
        windows = sorted({(r["layer"], tuple(r["layers"])) for r in mine})
        ids = sorted({r["id"] for r in mine})
        row, column = {i: n for n, i in enumerate(ids)}, {w: n for n, w in enumerate(windows)}
        scores = np.full((len(ids), len(windows)), np.nan)
        for r in mine:
            if r.get("score") is not None:
                scores[row[r["id"]], column[(r["layer"], tuple(r["layers"]))]] = r["score"]
        resampled = scores[np.random.default_rng(seed).integers(0, len(ids), size=(draws, len(ids)))]
        counts = (~np.isnan(resampled)).sum(axis=1)  # draws x windows
        means = np.where(counts > 0, np.nansum(resampled, axis=1) / np.maximum(counts, 1), 0.0)
        out[function] = _centre_and_spread(means, _middles([layers for _, layers in windows], depth))
    return out


def run_records(run: Path) -> list[dict]:
    """A locate run's records, read without touching the file (a torn last line is skipped); [] without one."""
    from vfl.runner import read_records

    return read_records(Path(run) / "results.jsonl", repair=False)


def bands(summary: dict) -> dict[str, dict]:
    """Per function: its class; for a VFL the band's layers and its span on the depth axis [0, 1]; for a
    sliding-window run, the read profile (``read_profile``), unless the model fails the function (then the
    scores measure noise)."""
    depth = summary["num_layers"]
    out = {}
    for function, data in summary["functions"].items():
        entry = {"class": data.get("class", "localized" if data.get("vfl") else "no VFL"), "vfl": data.get("vfl", [])}
        if entry["vfl"]:
            start, end = min(entry["vfl"]), max(entry["vfl"]) + 1
            entry.update(depth=[start / depth, end / depth], centre=(start + end) / 2 / depth)
        if summary.get("sweep", "window") == "window" and data.get("layers") and entry["class"] != "model fails":
            entry["profile"] = read_profile(data["layers"], depth)
        out[function] = entry
    return out


def order(entries: dict[str, dict]) -> tuple[list[str], str]:
    """The localized functions from shallow to deep, and whether that order is the paper's: ``matches``,
    ``differs`` or ``not testable`` (fewer than two localized functions)."""
    placed = sorted((e["centre"], PAPER_ORDER.index(f), f) for f, e in entries.items() if "centre" in e)
    functions = [f for _, _, f in placed]
    if len(functions) < 2:
        return functions, "not testable"
    ranks = [PAPER_ORDER.index(f) for f in functions]
    return functions, "matches" if ranks == sorted(ranks) else "differs"


def compare(runs: list[Path], names: list[str] | None = None, paper: bool = False) -> dict:
    """Each run's bands and order; with ``paper``, the paper's reported Qwen2.5-VL-7B positions as the first row
    (marked ``reported``: not measured by vfl) so a model's bands can be read against them."""
    if len(runs) < 1:
        raise VflError("give at least one run folder or summary.json")
    if names is not None and len(names) != len(runs):
        raise VflError(f"--names gives {len(names)} names for {len(runs)} runs")
    rows = [_row(PAPER_NAME, None, PAPER_QWEN25_7B) | {"reported": True}] if paper else []
    for index, run in enumerate(runs):
        summary = load_summary(run, needs=("num_layers", "functions", "window"))
        label = names[index] if names else f"{summary.get('model', run)} (w{summary['window']})"
        row = _row(label, str(run), summary)
        if Path(run).is_dir():
            add_intervals(row, profile_draws(run_records(run), summary["num_layers"]))
        rows.append(row)
    return {"paper_order": list(PAPER_ORDER), "runs": rows}


def add_intervals(row: dict, draws: dict[str, np.ndarray]) -> None:
    """Each read profile of a compared run gets the 95% intervals of its centre and spread from the run's
    ``profile_draws`` (a function without draws, or whose draws all move nothing, gets none)."""
    for function, entry in row["functions"].items():
        if entry.get("profile") and function in draws and not np.isnan(draws[function]).all():
            entry["profile"]["centre_ci"] = interval95(draws[function][:, 0])
            entry["profile"]["spread_ci"] = interval95(draws[function][:, 1])


def interval95(draws: np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles of bootstrap draws (NaN draws left out), rounded as the tables print."""
    return [round(float(v), 3) for v in np.nanpercentile(draws, [2.5, 97.5])]


def _row(name: str, path: str | None, summary: dict) -> dict:
    entries = bands(summary)
    functions, verdict = order(entries)
    return {"name": name, "path": path, "model": summary.get("model"), "num_layers": summary["num_layers"],
            "window": summary["window"], "functions": entries, "order": functions, "paper_order": verdict}


def table(result: dict) -> str:
    present = [f for f in FUNCTIONS if any(f in row["functions"] for row in result["runs"])]
    lines = ["| run | layers | window | " + " | ".join(NAMES[f] for f in present) + " | order (shallow to deep) | "
             "paper's order |", "|---|---|---|" + "---|" * len(present) + "---|---|"]
    for row in result["runs"]:
        cells = []
        for function in present:
            entry = row["functions"].get(function)
            if entry is None:
                cells.append("not run")
            elif entry["vfl"]:
                cells.append(f"{span_text(entry['vfl'])} ({entry['depth'][0]:.2f}-{entry['depth'][1]:.2f})")
            else:
                cells.append(entry["class"])
        order_text = " < ".join(NAMES[f] for f in row["order"]) or "–"
        lines.append(f"| {row['name']} | {row['num_layers']} | {row['window']} | " + " | ".join(cells)
                     + f" | {order_text} | {row['paper_order']} |")
    return "\n".join(lines)


def _profile_text(profile: dict) -> str:
    if "centre_ci" not in profile:
        return f"{profile['centre']:.2f} ± {profile['spread']:.2f}"
    (a, b), (c, d) = profile["centre_ci"], profile["spread_ci"]
    return f"{profile['centre']:.2f} ({a:.2f}-{b:.2f}) ± {profile['spread']:.2f} ({c:.2f}-{d:.2f})"


def profile_table(result: dict) -> str:
    """Each function's read profile per run (centre ± spread on the depth axis), or '' when no run has one."""
    present = [f for f in FUNCTIONS if any((row["functions"].get(f) or {}).get("profile") for row in result["runs"])]
    if not present:
        return ""
    lines = ["| run | " + " | ".join(NAMES[f] for f in present) + " |", "|---|" + "---|" * len(present)]
    for row in result["runs"]:
        if row.get("reported"):
            continue
        cells = []
        for function in present:
            profile = (row["functions"].get(function) or {}).get("profile")
            cells.append(_profile_text(profile) if profile else "–")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path | None = None):
    """One row per run; each function's VFL as a bar over its span of normalised depth, its read profile as a
    diamond at the centre with the spread as whiskers."""
    from matplotlib.patches import Patch

    runs = result["runs"]
    fig = new_figure(figsize=(9, 1.2 + 0.55 * len(runs) * 1.6), dpi=120)
    ax = fig.subplots()
    height = 0.8 / len(FUNCTIONS)
    for y, row in enumerate(reversed(runs)):
        for slot, function in enumerate(FUNCTIONS):
            entry = row["functions"].get(function)
            offset = y - 0.4 + height * (slot + 0.5)
            if entry and entry["vfl"]:
                start, end = entry["depth"]
                reported = dict(alpha=0.45, hatch="//", edgecolor="white") if row.get("reported") else {}
                ax.barh(offset, end - start, left=start, height=height * 0.9, color=f"C{slot}", **reported)
            elif entry:
                ax.text(0.005, offset, f"{NAMES[function]}: {entry['class']}", va="center", fontsize=6, color=f"C{slot}")
            if entry and entry.get("profile"):  # the read profile: its centre, and its spread as a whisker
                ax.errorbar(entry["profile"]["centre"], offset, xerr=entry["profile"]["spread"], fmt="D",
                            markersize=3, color="black", markerfacecolor=f"C{slot}", elinewidth=0.8, capsize=2)
    ax.legend([Patch(color=f"C{slot}") for slot in range(len(FUNCTIONS))], [NAMES[f] for f in FUNCTIONS],
              fontsize=7, loc="upper right")
    ax.set_yticks(range(len(runs)), [row["name"] for row in reversed(runs)], fontsize=8)
    ax.set(xlim=(0, 1), ylim=(-0.5, len(runs) - 0.5), xlabel="depth (layer / number of decoder layers)",
           title="VFL bands on a normalised depth axis")
    ax.grid(axis="x", alpha=0.3)
    return finish(fig, path)


def write(result: dict, out: Path) -> None:
    from vfl.html_report import compare_page
    from vfl.runner import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.json", json.dumps(result, indent=2) + "\n")
    profiles = profile_table(result)
    write_atomic(out / "compare.md", "# VFL bands compared\n\n" + table(result) + "\n\n![bands](compare.png)\n\n"
                 + (f"Read profiles, centre ± spread on the depth axis (95% bootstrap intervals over the probes in "
                    f"brackets, where a run folder holds its results.jsonl):\n\n{profiles}\n\n" if profiles else "") +
                 "Depth is layer / number of layers; a band covers its VFL's layers; a read profile weighs every "
                 "window by its mean normalised score (the diamond and whiskers in the plot), so it places "
                 "functions with no VFL too. The paper's order is "
                 "recognition < counting < grounding < OCR; a run `matches` when its localized functions keep "
                 "that order, and is `not testable` with fewer than two."
                 + (f" The row `{PAPER_NAME}` is not measured here: it is where the paper reads each function on "
                    "Qwen2.5-VL-7B (28 layers) as secondary notes report it, approximately (recognition spread over "
                    "layers 0-10, counting at 12, grounding at 18, OCR at 22)."
                    if any(row.get("reported") for row in result["runs"]) else "") + "\n")
    plot(result, out / "compare.png")
    write_atomic(out / "report.html", compare_page(result["runs"], out / "compare.png"))
