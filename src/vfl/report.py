"""Summaries (JSON), plots (PNG) and a Markdown report from the result records."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from vfl.errors import VflError
from vfl.metrics import holm, paired_p_value, vfl_band, wilson
from vfl.probes.schema import FUNCTIONS

NAMES = {"recog": "recognition", "count": "counting", "ground": "grounding", "ocr": "OCR"}


def _rate(records: list[dict], key: str) -> dict:
    n = len(records)
    hits = sum(bool(r[key]) for r in records)
    return {"n": n, "rate": hits / n if n else 0.0, "ci": list(wilson(hits, n))}


def _row(records: list[dict]) -> dict:
    change, transfer = _rate(records, "changed"), _rate(records, "transferred")
    scores = [r["score"] for r in records if r.get("score") is not None]
    row = {"n": transfer["n"], "change_rate": change["rate"], "change_ci": change["ci"],
           "transfer_rate": transfer["rate"], "ci": transfer["ci"], "score_n": len(scores),
           "score_mean": statistics.fmean(scores) if scores else None, "score_ci": None}
    if len(scores) > 1:
        half = 1.96 * statistics.stdev(scores) / math.sqrt(len(scores))
        row["score_ci"] = [row["score_mean"] - half, row["score_mean"] + half]
    return row


def _paired(records: list[dict], control: dict[str, bool]) -> dict:
    """Probes that transfer here but not without a swap (gains) and the reverse (losses), and the exact
    one-sided p-value of the gains."""
    gains = sum(r["transferred"] and not control.get(r["id"], False) for r in records)
    losses = sum(control.get(r["id"], False) and not r["transferred"] for r in records)
    return {"gains": gains, "losses": losses, "p_value": paired_p_value(gains, losses)}


def span_label(layers: list[int]) -> str:
    """How a set of consecutive layers is written: "7" or "20-23"."""
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def span_text(layers: list[int]) -> str:
    """"layer 7" or "layers 20-23"."""
    return ("layer " if len(layers) == 1 else "layers ") + span_label(layers)


def locate_summary(records: list[dict], model: str, num_layers: int, window: int, sweep: str = "window",
                   alpha: float = 0.05, min_effect: float = 0.1, min_accuracy: float = 0.5,
                   swap: dict | None = None) -> dict:
    """Per function: every swept window's rates, its exact paired test against the no-swap control (Holm
    across the function's windows), the VFL band among the windows that pass, and the function's class."""
    check_test(alpha, min_effect, min_accuracy)
    by_function = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_function[record["function"]][record["intervention"]].append(record)
    swept = sorted({(r["layer"], r["intervention"], tuple(r["layers"])) for r in records if r["layer"] is not None})
    functions = {}
    for function in [f for f in FUNCTIONS if f in by_function]:
        groups = by_function[function]
        none = groups.get("none", [])
        control = {r["id"]: bool(r["transferred"]) for r in none}
        floor = _row(none)["transfer_rate"]
        rows = []
        for k, name, layers in swept:
            mine = groups.get(name, [])
            label = f"head {k}" if sweep == "heads" else span_label(list(layers))
            rows.append({"layer": k, "layers": list(layers), "label": label, **_row(mine), **_paired(mine, control)})
        for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
            row["p_holm"] = adjusted
            row["passes"] = adjusted < alpha and row["transfer_rate"] - floor >= min_effect
        every = {**_row(groups.get("all", [])), **_paired(groups.get("all", []), control)}
        every["passes"] = every["p_value"] < alpha and every["transfer_rate"] - floor >= min_effect
        peak, band = (None, [])
        if sweep == "window":
            peak_index, band_index = vfl_band([r["transfer_rate"] for r in rows], [r["passes"] for r in rows])
            peak, band = (None if peak_index is None else rows[peak_index]["layer"]), [rows[i]["layer"] for i in band_index]
        elif sweep == "heads":  # heads have no order: every passing head counts, the best one is the peak
            band = [r["layer"] for r in rows if r["passes"]]
            peak = max(band, key=lambda k: (rows_by_k(rows)[k]["transfer_rate"], -k), default=None)
        data = {
            "layers": rows,
            "controls": {"none": _row(none), "all": every},
            "accuracy_a": _rate(none, "correct_a")["rate"],
            "peak": peak,
            "vfl_windows": band,
            "vfl": [] if sweep == "heads" else sorted({k for row in rows if row["layer"] in band for k in row["layers"]}),
        }
        data["class"] = classify(data, sweep, min_accuracy)
        data["verdict"] = verdict(data, sweep, window, num_layers, min_accuracy)
        functions[function] = data
    return {"model": model, "num_layers": num_layers, "window": window, "sweep": sweep,
            "swap": swap or {"what": "kv", "heads": None, "tokens": None},
            "test": {"method": "exact one-sided McNemar test of each window against the no-swap control on the "
                               "same probes, Holm-corrected across a function's windows",
                     "alpha": alpha, "min_effect": min_effect, "min_accuracy": min_accuracy},
            "functions": functions}


def rows_by_k(rows: list[dict]) -> dict[int, dict]:
    return {row["layer"]: row for row in rows}


def check_test(alpha: float, min_effect: float, min_accuracy: float) -> None:
    if not 0 < alpha < 1:
        raise VflError(f"--alpha must be between 0 and 1, got {alpha}")
    if not 0 <= min_effect <= 1:
        raise VflError(f"--min-effect must be between 0 and 1, got {min_effect}")
    if not 0 <= min_accuracy <= 1:
        raise VflError(f"--min-accuracy must be between 0 and 1, got {min_accuracy}")


def classify(data: dict, sweep: str, min_accuracy: float) -> str:
    """``model fails`` (A answered wrongly too often), ``not read`` (even swapping every layer does not
    transfer), ``localized`` (a window passes), ``distributed`` (all layers transfer, no window does);
    cumulative sweeps say ``read`` instead of the last two."""
    if data["accuracy_a"] < min_accuracy:
        return "model fails"
    if not data["controls"]["all"]["passes"]:
        return "not read"
    if sweep in ("from", "upto"):
        return "read"
    return "localized" if data["vfl_windows"] else "distributed"


def verdict(data: dict, sweep: str, window: int, num_layers: int, min_accuracy: float) -> str:
    """The class in one sentence, with the numbers that decide it."""
    none, every = data["controls"]["none"], data["controls"]["all"]
    kind = data["class"]
    if kind == "model fails":
        return (f"model fails: A is answered right in {data['accuracy_a']:.2f} of the probes (below "
                f"{min_accuracy:.2f}), so its transfers say little")
    if kind == "not read":
        return (f"not read: even swapping every layer transfers {every['transfer_rate']:.2f} (no swap "
                f"{none['transfer_rate']:.2f}, p = {every['p_value']:.2g}); the answer does not follow this attribute")
    if kind == "localized" and sweep == "heads":
        best = rows_by_k(data["layers"])[data["peak"]]
        return (f"localized in heads {', '.join(map(str, data['vfl_windows']))} of {span_text(best['layers'])} (best: "
                f"head {best['layer']} alone transfers {best['transfer_rate']:.2f} against {none['transfer_rate']:.2f} "
                f"without a swap, Holm p = {best['p_holm']:.2g}; all layers {every['transfer_rate']:.2f})")
    if kind == "localized":
        best = next(r for r in data["layers"] if r["layer"] == data["peak"])
        return (f"localized: {span_text(data['vfl'])} (peak {span_text(best['layers'])}: transfer "
                f"{best['transfer_rate']:.2f} against {none['transfer_rate']:.2f} without a swap, Holm p = "
                f"{best['p_holm']:.2g}; all layers {every['transfer_rate']:.2f})")
    if kind == "distributed" and sweep == "heads":
        layers = span_text(data["layers"][0]["layers"]) if data["layers"] else "the chosen layers"
        return (f"distributed over heads: swapping all layers transfers {every['transfer_rate']:.2f}, but no single "
                f"key/value head of {layers} passes the test")
    if kind == "distributed":
        best = max(data["layers"], key=lambda r: r["transfer_rate"], default=None)
        best_text = "" if best is None else f" (best: {span_text(best['layers'])}, {best['transfer_rate']:.2f})"
        size = "one layer" if window == 1 else f"{window} layers"
        return (f"distributed: swapping all layers transfers {every['transfer_rate']:.2f}, but no window of {size} "
                f"passes the test{best_text}; it is read across the depth (try --sweep from or upto)")
    passing = [r["layer"] for r in data["layers"] if r["passes"]]
    if not passing:
        return f"read: all layers transfer {every['transfer_rate']:.2f}, but no cumulative swap of this sweep passes"
    if sweep == "from":
        return (f"read: swapping layers k..{num_layers - 1} transfers for k up to {max(passing)}; layers after "
                f"{max(passing)} alone do not carry it")
    return f"read: swapping layers 0..k transfers from k = {min(passing)} on; layers before it alone do not carry it"


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


def new_figure(**kwargs):
    """A matplotlib Figure outside pyplot: no global state to close, drawn by whichever backend shows it
    (a notebook's inline one, or Agg when saved)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def finish(fig, path: Path | None):
    """Lay the figure out, save it to ``path`` if given, and return it."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


SWEEP_AXIS = {"window": "layers swapped (window of {w})", "from": "layers swapped: k..{last}",
              "upto": "layers swapped: 0..k", "heads": "key/value head swapped (at the chosen layers)"}


def plot_locate(summary: dict, path: Path | None = None):
    """Transfer rate per swept window (95% Wilson bands; the no-swap and all-layer controls as dashed and
    dotted lines; VFL windows circled) and, beside it, the mean normalised transfer score. Windows are
    labelled by their layer span. Returns the figure; saves and closes it when ``path`` is given."""
    functions = summary["functions"]
    has_scores = any(r.get("score_mean") is not None for d in functions.values() for r in d["layers"])
    fig = new_figure(figsize=(13 if has_scores else 8, 4.8), dpi=120)
    axes = fig.subplots(1, 2 if has_scores else 1, squeeze=False)
    rate_ax = axes[0][0]
    labels = {}
    for index, (function, data) in enumerate(functions.items()):
        colour = f"C{index}"
        rows = data["layers"]
        xs = [r["layer"] for r in rows]
        labels.update({r["layer"]: r["label"] for r in rows})
        name = f"{NAMES[function]} ({data['class']})"
        rate_ax.plot(xs, [r["transfer_rate"] for r in rows], marker="o", markersize=3, color=colour, label=name)
        rate_ax.fill_between(xs, [r["ci"][0] for r in rows], [r["ci"][1] for r in rows], color=colour, alpha=0.12)
        rate_ax.axhline(data["controls"]["none"]["transfer_rate"], color=colour, linestyle="--", linewidth=0.8)
        rate_ax.axhline(data["controls"]["all"]["transfer_rate"], color=colour, linestyle=":", linewidth=1.0)
        for r in rows:
            if r["layer"] in data["vfl_windows"]:
                rate_ax.plot([r["layer"]], [r["transfer_rate"]], marker="o", markersize=9, color=colour,
                             markerfacecolor="none")
        if has_scores:
            scored = [r for r in rows if r.get("score_mean") is not None]
            sx = [r["layer"] for r in scored]
            axes[0][1].plot(sx, [r["score_mean"] for r in scored], marker="o", markersize=3, color=colour, label=name)
            with_ci = [r for r in scored if r["score_ci"]]
            axes[0][1].fill_between([r["layer"] for r in with_ci], [r["score_ci"][0] for r in with_ci],
                                    [r["score_ci"][1] for r in with_ci], color=colour, alpha=0.12)
    xlabel = SWEEP_AXIS[summary.get("sweep", "window")].format(w=summary["window"], last=summary["num_layers"] - 1)
    ticks = sorted(labels)
    step = max(1, len(ticks) // 40)
    for ax in axes[0]:
        ax.set_xticks(ticks[::step], [labels[k] for k in ticks[::step]], rotation=90, fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    rate_ax.plot([], [], color="0.4", linestyle="--", linewidth=0.8, label="no swap (control)")
    rate_ax.plot([], [], color="0.4", linestyle=":", linewidth=1.0, label="all layers (control)")
    rate_ax.plot([], [], color="0.4", marker="o", markersize=9, markerfacecolor="none", linestyle="none",
                 label="VFL window")
    rate_ax.set(title=f"Visual Token Swapping: {summary['model']}", ylabel="transfer rate (answer becomes B's)",
                ylim=(-0.02, 1.02))
    rate_ax.legend(loc="best", fontsize=7)
    if has_scores:
        score_ax = axes[0][1]
        for level in (0, 1):
            score_ax.axhline(level, color="0.5", linewidth=0.8, linestyle="--" if level == 0 else ":")
        score_ax.set(title="normalised transfer score (0 = no swap, 1 = all layers)",
                     ylabel="mean of (ΔlogP - ΔlogP none) / (ΔlogP all - ΔlogP none)")
    return finish(fig, path)


def write_locate(summary: dict, out: Path) -> None:
    from vfl.runner import write_atomic

    out = Path(out)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_locate(summary, out / "curves.png")
    write_atomic(out / "report.md", locate_report(summary))


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
            "heads": "one key/value head at a time, at the chosen layers"}
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


def plot_drop(summary: dict, path: Path | None = None):
    """Accuracy per function against the number of last layers whose visual KV is dropped (95% Wilson bands)."""
    fig = new_figure(figsize=(8, 4.5), dpi=120)
    ax = fig.subplots()
    for function, data in summary["functions"].items():
        xs = [r["dropped"] for r in data["curve"]]
        (line,) = ax.plot(xs, [r["accuracy"] for r in data["curve"]], marker="o", markersize=3, label=NAMES[function])
        ax.fill_between(xs, [r["ci"][0] for r in data["curve"]], [r["ci"][1] for r in data["curve"]],
                        color=line.get_color(), alpha=0.15)
    ax.set(title=f"Vision token dropping: {summary['model']}", xlabel="visual KV dropped from the last N decoder layers",
           ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return finish(fig, path)


def running_mean(values: list, width: int) -> list:
    """Mean of the last ``width`` values at each step, skipping None (a step without that function)."""
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1): i + 1] if v is not None]
        out.append(sum(window) / len(window) if window else None)
    return out


def plot_losses(losses: list[float], function_losses: dict[str, list], path: Path | None = None, width: int = 20):
    """A training run's loss per step (faint) and its running mean over ``width`` steps, beside each function's
    mean answer loss (running mean): which function is still learning, and which has stalled."""
    fig = new_figure(figsize=(10, 4), dpi=110)
    total, each = fig.subplots(1, 2, sharex=True)
    steps = range(1, len(losses) + 1)
    total.plot(steps, losses, color="0.75", linewidth=0.6)
    total.plot(steps, running_mean(losses, width), color="C0")
    total.set(title="training loss", xlabel="step", ylabel=f"answer loss (running mean of {width})", yscale="log")
    for function, values in function_losses.items():
        smooth = running_mean(values, width)
        shown = [(x, v) for x, v in zip(steps, smooth) if v is not None]
        if shown:
            each.plot(*zip(*shown), label=NAMES.get(function, function))
    each.set(title="per function (per-sample means)", xlabel="step", yscale="log")
    for ax in (total, each):
        ax.grid(alpha=0.3, which="both")
    each.legend(loc="best", fontsize=8)
    return finish(fig, path)


def write_drop(summary: dict, out: Path) -> None:
    from vfl.runner import write_atomic

    out = Path(out)
    write_atomic(out / "drop_summary.json", json.dumps(summary, indent=2) + "\n")
    plot_drop(summary, out / "drop.png")
