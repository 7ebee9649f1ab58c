"""Summaries (JSON), plots (PNG) and a Markdown report from the result records."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from vfl.errors import VflError
from vfl.metrics import vfl_band, wilson
from vfl.probes.schema import FUNCTIONS

NAMES = {"recog": "recognition", "count": "counting", "ground": "grounding", "ocr": "OCR"}


def _rate(records: list[dict], key: str) -> dict:
    n = len(records)
    hits = sum(bool(r[key]) for r in records)
    return {"n": n, "rate": hits / n if n else 0.0, "ci": list(wilson(hits, n))}


def _row(records: list[dict]) -> dict:
    change, transfer = _rate(records, "changed"), _rate(records, "transferred")
    return {"n": transfer["n"], "change_rate": change["rate"], "change_ci": change["ci"],
            "transfer_rate": transfer["rate"], "ci": transfer["ci"]}


def locate_summary(records: list[dict], model: str, num_layers: int, window: int) -> dict:
    by_function = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_function[record["function"]][record["intervention"]].append(record)
    functions = {}
    for function in [f for f in FUNCTIONS if f in by_function]:
        groups = by_function[function]
        swept = sorted({r["layer"] for r in records if r["layer"] is not None})
        layers = [{"layer": k, "layers": list(range(k, k + window)), **_row(groups.get(f"layer {k}", []))}
                  for k in swept]
        none = groups.get("none", [])
        floor = _row(none)["transfer_rate"] if none else 0.0
        peak_index, band = vfl_band([r["transfer_rate"] for r in layers], [tuple(r["ci"]) for r in layers],
                                    floor=floor)
        peak = None if peak_index is None else swept[peak_index]
        band = [swept[i] for i in band]
        functions[function] = {
            "layers": layers,
            "controls": {name: _row(groups.get(name, [])) for name in ("none", "all")},
            "accuracy_a": _rate(none, "correct_a")["rate"],
            "peak": peak,
            "vfl": sorted({k for start in band for k in range(start, start + window)}),
        }
    return {"model": model, "num_layers": num_layers, "window": window, "functions": functions}


def load_vfls(summary_path: Path, margin: int = 0) -> dict[str, list[int]]:
    """Every function's VFL in a `vfl locate` summary.json (functions without one are left out), each
    widened by ``margin`` layers on both sides."""
    try:
        summary = json.loads(Path(summary_path).read_text())
        functions, num_layers = summary["functions"], summary["num_layers"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise VflError(f"cannot read the locate summary {summary_path} ({err})") from None
    vfls = {}
    for function, data in functions.items():
        if data.get("vfl"):
            layers = data["vfl"]
            vfls[function] = [k for k in range(min(layers) - margin, max(layers) + margin + 1) if 0 <= k < num_layers]
    return vfls


def mean_sd(values: list[float]) -> str:
    """A table cell for a result over seeds: mean ± sample standard deviation (the mean alone for one)."""
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def _plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, list, list, list]],
          bands: dict[str, list[int]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for label, xs, ys, cis in series:
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15)
        for k in (bands or {}).get(label, []):
            if k in xs:
                ax.plot([k], [ys[xs.index(k)]], marker="o", markersize=8, color=line.get_color(),
                        markerfacecolor="none")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_locate(summary: dict, out: Path) -> None:
    out = Path(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    series, bands = [], {}
    for function, data in summary["functions"].items():
        label = NAMES[function]
        xs = [r["layer"] for r in data["layers"]]
        series.append((label, xs, [r["transfer_rate"] for r in data["layers"]], [r["ci"] for r in data["layers"]]))
        bands[label] = [k for k in data["vfl"] if k in xs]
    window = summary["window"]
    _plot(out / "curves.png", f"Visual Token Swapping: {summary['model']}",
          "decoder layer swapped" + (f" (window of {window}, by first layer)" if window > 1 else ""),
          "transfer rate (answer becomes B's)", series, bands)
    lines = [
        f"# Vision Function Layers of `{summary['model']}`", "",
        f"{summary['num_layers']} decoder layers; visual KV of image A swapped with image B's at "
        + ("one layer at a time." if window == 1 else f"windows of {window} layers."), "",
        "| function | probes | A answered right | transfer, no swap | transfer, all layers | peak layer "
        "| peak transfer (95% CI) | VFL layers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for function, data in summary["functions"].items():
        none, every = data["controls"]["none"], data["controls"]["all"]
        peak = data["peak"]
        best = next((r for r in data["layers"] if r["layer"] == peak), None)
        peak_text = "–" if best is None else f"{best['transfer_rate']:.2f} ({best['ci'][0]:.2f}-{best['ci'][1]:.2f})"
        lines.append(f"| {NAMES[function]} | {every['n']} | {data['accuracy_a']:.2f} | {none['transfer_rate']:.2f} | "
                     f"{every['transfer_rate']:.2f} | {'–' if peak is None else peak} | {peak_text} | "
                     f"{', '.join(map(str, data['vfl'])) or '–'} |")
    lines += ["", "![transfer rate per layer](curves.png)", "",
              "Transfer: the answer matches image B's (count equal, IoU > 0.5, same word, yes turned to no). "
              "The VFL is the peak layer and up to two adjacent layers whose rate lies inside the peak's "
              "95% Wilson interval, provided that interval clears the no-swap control's rate (answers that "
              "were B's already); otherwise the function has no VFL. A flat curve with a high all-layer "
              "control means no single layer carries the function; a low all-layer control means the model "
              "does not read that attribute at all."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def drop_summary(records: list[dict], model: str, num_layers: int) -> dict:
    by_function = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_function[record["function"]][record["dropped"]].append(record)
    functions = {}
    for function in [f for f in FUNCTIONS if f in by_function]:
        curve = []
        for n in range(num_layers + 1):
            rate = _rate(by_function[function].get(n, []), "correct")
            curve.append({"dropped": n, "n": rate["n"], "accuracy": rate["rate"], "ci": rate["ci"]})
        functions[function] = {"curve": curve}
    return {"model": model, "num_layers": num_layers, "functions": functions}


def write_drop(summary: dict, out: Path) -> None:
    out = Path(out)
    (out / "drop_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    series = [(NAMES[f], [r["dropped"] for r in d["curve"]], [r["accuracy"] for r in d["curve"]],
               [r["ci"] for r in d["curve"]]) for f, d in summary["functions"].items()]
    _plot(out / "drop.png", f"Vision token dropping: {summary['model']}",
          "visual KV dropped from the last N decoder layers", "accuracy", series)
