"""The VFL call, from the result records: rates with Wilson intervals per function and window, the exact paired
test against the no-swap control with Holm's correction, the VFL band, each function's class and verdict
(summary.json's content), and the dropping curves' summary."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from vfl.errors import VflError
from vfl.jsonl import read_json
from vfl.metrics import holm, paired_p_value, vfl_band, wilson, yes_no_stats
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
            label = f"head {k}" if sweep == "heads" else name if sweep == "custom" else span_label(list(layers))
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
        elif sweep in ("heads", "custom"):  # no order: every passing one counts, the best is the peak
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
        which = "intervention of the list" if sweep == "custom" else f"window of {size}"
        return (f"distributed: swapping all layers transfers {every['transfer_rate']:.2f}, but no {which} "
                f"passes the test{best_text}; it is read across the depth (try --sweep from or upto)")
    passing = [r["layer"] for r in data["layers"] if r["passes"]]
    if not passing:
        return f"read: all layers transfer {every['transfer_rate']:.2f}, but no cumulative swap of this sweep passes"
    if sweep == "from":
        return (f"read: swapping layers k..{num_layers - 1} transfers for k up to {max(passing)}; layers after "
                f"{max(passing)} alone do not carry it")
    return f"read: swapping layers 0..k transfers from k = {min(passing)} on; layers before it alone do not carry it"


def load_summary(path: Path, needs: tuple[str, ...] = ("num_layers", "functions")) -> dict:
    """A `vfl locate` summary from a run folder or its summary.json path, holding at least the keys ``needs``."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    summary = read_json(file, "locate summary")
    if not isinstance(summary, dict) or not set(needs) <= set(summary):
        raise VflError(f"{file} is not a vfl locate summary (it lacks {' or '.join(needs)})")
    return summary


def load_vfls(summary_path: Path, margin: int = 0) -> dict[str, list[int]]:
    """Every function's VFL in a `vfl locate` run's summary (functions without one are left out), each
    widened by ``margin`` layers on both sides."""
    summary = load_summary(summary_path)
    functions, num_layers = summary["functions"], summary["num_layers"]
    vfls = {}
    for function, data in functions.items():
        if data.get("vfl"):
            layers = data["vfl"]
            vfls[function] = [k for k in range(min(layers) - margin, max(layers) + margin + 1) if 0 <= k < num_layers]
    return vfls


def accuracy(records: list[dict]) -> dict:
    """n, accuracy (the mean credit: TextVQA's soft accuracy where scored so; records from before credits count
    1 where correct) and its 95% Wilson interval (none for soft credit); POPE's numbers where every record is
    scored yes/no. Shared by `vfl drop`'s curve and `vfl eval`'s table."""
    n, hits = len(records), sum(bool(r["correct"]) for r in records)
    credits = [r.get("credit", float(bool(r["correct"]))) for r in records]
    soft = any(c not in (0, 1) for c in credits)
    row = {"n": n, "accuracy": sum(credits) / n if n else 0.0, "ci": None if soft else list(wilson(hits, n))}
    if records and all(r.get("scorer") == "yes-no" for r in records):
        row["yes_no"] = yes_no_stats([r["answer"] for r in records], [r["target"] for r in records])
    return row


def drop_summary(records: list[dict], model: str, num_layers: int) -> dict:
    by_function = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_function[record["function"]][record["dropped"]].append(record)
    functions = {}
    for function in [f for f in FUNCTIONS if f in by_function]:
        curve = []
        for n in range(num_layers + 1):
            curve.append({"dropped": n, **accuracy(by_function[function].get(n, []))})
        functions[function] = {"curve": curve}
    return {"model": model, "num_layers": num_layers, "functions": functions}
