"""The figures people look at: transfer curves (curves.png), dropping curves (drop.png), training losses
(losses.png); each a matplotlib Figure outside pyplot, returned, and saved when a path is given."""

from __future__ import annotations

from pathlib import Path

from vfl.decision import NAMES


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
              "upto": "layers swapped: 0..k", "heads": "key/value head swapped (at the chosen layers)",
              "custom": "intervention (as given)"}


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


def plot_drop(summary: dict, path: Path | None = None):
    """Accuracy per function against the number of last layers whose visual KV is dropped (95% Wilson bands)."""
    fig = new_figure(figsize=(8, 4.5), dpi=120)
    ax = fig.subplots()
    for function, data in summary["functions"].items():
        xs = [r["dropped"] for r in data["curve"]]
        (line,) = ax.plot(xs, [r["accuracy"] for r in data["curve"]], marker="o", markersize=3, label=NAMES[function])
        if all(r["ci"] for r in data["curve"]):  # none for soft credit (TextVQA)
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
