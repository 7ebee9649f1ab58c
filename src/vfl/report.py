"""What a run writes for people: summary.json, the plots, report.md (the table and each function's class in
one sentence) and report.html (`vfl.html_report`); a table cell over seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from vfl.decision import NAMES, span_text
from vfl.html_report import drop_page, locate_page
from vfl.plots import plot_drop, plot_locate


def mean_sd(values: list[float]) -> str:
    """A table cell for a result over seeds: mean ± sample standard deviation (the mean alone for one)."""
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def write_locate(summary: dict, out: Path, records: list[dict], probes: list) -> None:
    from vfl.runner import write_atomic

    out = Path(out)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_locate(summary, out / "curves.png")
    write_atomic(out / "report.md", locate_report(summary))
    write_atomic(out / "report.html", locate_page(summary, records, probes, out))


def _swapped(swap: dict | None) -> str:
    swap = swap or {"what": "kv"}
    text = {"kv": "the keys and values", "k": "the keys", "v": "the values",
            "hidden": "the residual stream (recomputed onward)"}[swap["what"]]
    if swap.get("heads") is not None:
        text += f" of key/value heads {', '.join(map(str, swap['heads']))}"
    if swap.get("tokens") is not None:
        text += f" at {len(swap['tokens'])} chosen visual positions"
    return text


def _vfl_text(data: dict, sweep: str) -> str:
    if data["vfl"]:
        return span_text(data["vfl"])
    if sweep == "heads" and data["vfl_windows"]:
        return "heads " + ", ".join(map(str, data["vfl_windows"]))
    return "–"


def locate_report(summary: dict) -> str:
    """report.md: what was swapped, the table, each function's class in words, the plot."""
    sweep, window = summary.get("sweep", "window"), summary["window"]
    last = summary["num_layers"] - 1
    what = {"window": "one layer at a time" if window == 1 else f"in windows of {window} consecutive layers",
            "from": f"from layer k to the last ({last}), for every k", "upto": "from the first layer to layer k, for every k",
            "heads": "one key/value head at a time, at the chosen layers",
            "custom": "as each of the given interventions says"}
    test = summary["test"]
    lines = [
        f"# Vision Function Layers of `{summary['model']}`", "",
        f"{summary['num_layers']} decoder layers; {_swapped(summary.get('swap'))} of image A's visual tokens swapped "
        f"with image B's {what[sweep]}.", "",
        "| function | class | probes | A answered right | transfer, no swap | transfer, all layers | peak "
        "| peak transfer (95% CI) | Holm p | VFL layers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for function, data in summary["functions"].items():
        none, every = data["controls"]["none"], data["controls"]["all"]
        best = next((r for r in data["layers"] if r["layer"] == data["peak"]), None)
        if best is None and data["layers"]:
            best = max(data["layers"], key=lambda r: (r["transfer_rate"], -r["layer"]))
        peak_text = "–" if best is None else f"{best['transfer_rate']:.2f} ({best['ci'][0]:.2f}-{best['ci'][1]:.2f})"
        lines.append(f"| {NAMES[function]} | {data['class']} | {every['n']} | {data['accuracy_a']:.2f} | "
                     f"{none['transfer_rate']:.2f} | {every['transfer_rate']:.2f} | "
                     f"{'–' if best is None else span_text(best['layers'])} | {peak_text} | "
                     f"{'–' if best is None else format(best['p_holm'], '.2g')} | "
                     f"{_vfl_text(data, sweep)} |")
    lines += [""] + [f"- **{NAMES[f]}**: {d['verdict']}." for f, d in summary["functions"].items()]
    lines += ["", "![transfer rate per layer window](curves.png)", "",
              "Transfer: the answer matches image B's (count equal, IoU > 0.5, same word, yes turned to no). A window "
              f"passes when an exact one-sided McNemar test against the no-swap control on the same probes, "
              f"Holm-corrected across the function's windows, gives p < {test['alpha']} and its transfer rate "
              f"exceeds the control's by at least {test['min_effect']}. The VFL is the highest passing window and "
              "up to two adjacent passing windows. The peak column shows the best window even when none passes. "
              "The score (right panel) is the log-probability of B's answer minus A's, normalised so that no swap "
              "gives 0 and swapping every layer gives 1."]
    return "\n".join(lines) + "\n"


def write_drop(summary: dict, out: Path, records: list[dict], items: list) -> None:
    """drop_summary.json, drop.png and report.html (``items``: the (probe, side) pairs answered)."""
    from vfl.runner import write_atomic

    out = Path(out)
    write_atomic(out / "drop_summary.json", json.dumps(summary, indent=2) + "\n")
    plot_drop(summary, out / "drop.png")
    probes = list({id(probe): probe for probe, _ in items}.values())
    write_atomic(out / "report.html", drop_page(summary, records, probes, out))
