"""VFL-select: label training samples by the function whose Vision Function Layers they need; pick a budget.

A sample's profile is the mean loss of its answer tokens with the model intact and with the visual KV
dropped at each function's VFL (the drop intervention: the conversation's later tokens cannot read the
visual positions at those layers). The rise of the loss per function is the sample's score for it. One
prefill per sample; the intact row and every ablation then read the rest of the conversation as one batch.

Labels (the paper's rule). A sample's label is the function whose ablation raises its loss most; the
confidence is that rise's share of all positive rises (1.0: only one function's ablation hurts). A
sample whose loss rises by no more than ``min_score`` under every ablation exercises no function (text
only, an answer the image does not support, an image the model ignores): it is labelled ``none`` and
never selected.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vfl import runner
from vfl.errors import VflError
from vfl.interventions import Intervention, check_layers, prefill, repeat_cache, suffix_inputs, visual_kv_dropped
from vfl.lora import LABELS, answer_loss, encode, open_image
from vfl.models import Adapter

NONE = "none"
STRATEGIES = ("balanced", "top")


def ablations(vfls: dict[str, list[int]]) -> list[Intervention]:
    """Row 0 drops nothing; row 1 + i drops the visual KV at the i-th function's VFL."""
    return [Intervention(NONE, ())] + [Intervention(f, tuple(layers)) for f, layers in vfls.items()]


@torch.inference_mode()
def answer_losses(adapter: Adapter, sample: dict, interventions: list[Intervention]) -> list[float]:
    """The sample's mean answer-token loss under each intervention (one prefill, all rows batched)."""
    inputs, labels = encode(adapter, open_image(sample), sample["turns"])
    labels = labels.to(adapter.device)
    if sample["image"] is None:  # nothing visual to drop: every row is the plain loss
        logits = adapter.model(**{k: v.to(adapter.device) for k, v in inputs.items()}).logits
        return [answer_loss(logits, labels).item()] * len(interventions)
    prompt = adapter.prompt(inputs)
    start, rows = prompt.prefix_length, len(interventions)
    if (labels[0, : start + 1] != -100).any():
        raise VflError(f"sample {sample['id']}: the answer must come after a question that follows the image")
    cache = repeat_cache(prefill(adapter, prompt), rows, adapter.model.config)
    with visual_kv_dropped(adapter, interventions, prompt.visual_span):
        logits = adapter.model(**suffix_inputs(adapter, prompt, rows), **adapter.cache_inputs(cache)).logits
    return answer_loss(logits, labels[:, start:].expand(rows, -1)).tolist()


def measure(adapter: Adapter, samples: list[dict], vfls: dict[str, list[int]], out: Path,
            settings: dict) -> list[dict] | None:
    """``losses.jsonl`` in ``out``: per sample, the plain loss and the loss with each VFL ablated. Resumes;
    shards under torchrun / accelerate launch. Returns every record on rank 0, None elsewhere."""
    for layers in vfls.values():
        check_layers(layers, adapter.num_layers)
    interventions = ablations(vfls)

    def work(sample, _missing):
        losses = answer_losses(adapter, sample, interventions)
        yield {"id": sample["id"], "intervention": "profile", "image": sample["image"] is not None,
               "loss": losses[0], "ablated": dict(zip(vfls, losses[1:]))}

    with runner.claim(out, {**settings, "labels": LABELS}) as folder:
        return runner.run(folder, "losses.jsonl", samples, lambda s: s["id"], ["profile"], work, "select")


def profiles(records: list[dict], min_score: float = 0.0) -> list[dict]:
    """Per sample: ``scores`` (loss rise per function), ``function`` (label or "none") and ``confidence``."""
    pool = []
    for record in records:
        scores = {f: loss - record["loss"] for f, loss in record["ablated"].items()}
        best = max(scores, key=scores.get) if scores else None
        if best is None or scores[best] <= min_score:
            label, confidence = NONE, None
        else:
            label, confidence = best, round(scores[best] / sum(v for v in scores.values() if v > 0), 4)
        pool.append({"id": record["id"], "loss": record["loss"], "scores": scores, "function": label,
                     "confidence": confidence})
    return pool


def check_choice(budget: float, strategy: str, targets: list[str] | None, vfls: dict[str, list[int]]) -> None:
    """Refuse a budget, strategy or target that cannot be chosen, before any sample is measured."""
    if strategy not in STRATEGIES:
        raise VflError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if budget <= 0 or (budget > 1 and budget != int(budget)):
        raise VflError(f"--budget is a share in (0, 1] or a whole number of samples, got {budget:g}")
    missing = [t for t in targets or [] if t not in vfls]
    if missing:
        raise VflError(f"--target {missing[0]} has no VFL in the summary (functions with one: {', '.join(vfls)})")


def take_in_turns(queues: dict[str, list], wanted: int) -> list:
    """The queues' heads in turn (one from each non-empty queue per round) until ``wanted`` or all are empty."""
    queues = {key: list(queue) for key, queue in queues.items()}
    taken = []
    while len(taken) < wanted and any(queues.values()):
        for queue in queues.values():
            if queue and len(taken) < wanted:
                taken.append(queue.pop(0))
    return taken


def choose(pool: list[dict], budget: float, targets: list[str], strategy: str = "balanced") -> dict:
    """The chosen ids for ``budget`` (a share of the pool, or a count when > 1) among samples labelled with
    a target function: ``balanced`` takes the targets in turn, each its highest-scoring sample next;
    ``top`` takes the highest scores whatever the function. Samples labelled "none" are never chosen."""
    wanted = int(budget) if budget > 1 else round(budget * len(pool))
    ranked = {f: sorted((p for p in pool if p["function"] == f), key=lambda p: (-p["scores"][f], p["id"]))
              for f in targets}
    if strategy == "top":
        chosen = sorted((p for f in targets for p in ranked[f]), key=lambda p: (-p["scores"][p["function"]], p["id"]))
        chosen = chosen[:wanted]
    else:
        chosen = take_in_turns(ranked, wanted)
    return {"strategy": strategy, "budget": budget, "pool": len(pool), "wanted": wanted, "chosen": len(chosen),
            "targets": targets, "per_function": {f: sum(p["function"] == f for p in chosen) for f in targets},
            "ids": [p["id"] for p in chosen]}


def plot(pool: list[dict], path: Path) -> None:
    """Left: how many samples each label got; right: each function's score over the whole pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    functions = list(pool[0]["scores"]) if pool else []
    labels = functions + [NONE]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    counts = [sum(p["function"] == f for p in pool) for f in labels]
    left.bar(labels, counts, color=[f"C{i}" for i in range(len(functions))] + ["0.6"])
    left.set_title("samples per VFL label")
    left.set_ylabel("samples")
    for i, count in enumerate(counts):
        left.annotate(str(count), (i, count), ha="center", va="bottom", fontsize=8)
    if functions:
        right.boxplot([[p["scores"][f] for p in pool] for f in functions], showfliers=False)
        right.set_xticks(range(1, len(functions) + 1), functions)
    right.axhline(0, color="0.7", linewidth=0.8)
    right.set_title("loss rise when the function's VFL is dropped")
    right.set_ylabel("answer loss rise (nats)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(records: list[dict], out: Path, budget: float, targets: list[str] | None, strategy: str,
                  min_score: float) -> dict:
    """profiles.jsonl, selection.json and profiles.png from the loss records; returns the selection."""
    out = Path(out)
    pool = profiles(records, min_score)
    targets = targets or (list(records[0]["ablated"]) if records else [])
    with (out / "profiles.jsonl").open("w") as handle:
        handle.writelines(json.dumps(p) + "\n" for p in pool)
    selection = {**choose(pool, budget, targets, strategy), "min_score": min_score}
    (out / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")
    plot(pool, out / "profiles.png")
    return selection


def select(adapter: Adapter, samples: list[dict], vfls: dict[str, list[int]], out: Path, settings: dict,
           budget: float, targets: list[str] | None = None, strategy: str = "balanced",
           min_score: float = 0.0) -> dict | None:
    """Measure the pool (resumable) and write its profiles, plot and selection; None on ranks other than 0.
    A rerun with another budget, strategy or target reuses the measured losses."""
    check_choice(budget, strategy, targets, vfls)
    settings = {**settings, "labels": LABELS}  # as measure records them: one claim, one set of settings
    with runner.claim(out, settings) as folder:
        records = measure(adapter, samples, vfls, folder, settings)
        if records is None:
            return None
        order = {sample["id"]: i for i, sample in enumerate(samples)}
        return write_outputs(sorted(records, key=lambda r: order[r["id"]]), folder, budget, targets, strategy,
                             min_score)
