"""VFL-select's labels with the answer labels ending at the end-of-turn token (vfl.lora.encode since 2026-12-07)
and with the chat template's newline after it labelled too (before): agreement with a pool's hidden kinds.

The pool is bench/vfl_select.py's (pool.json + truth.json); the VFLs are a `vfl locate` summary's. Both label sets
come from the same forward passes: the intact row and each VFL's drop, scored over the two label spans.

  python research/paper_on_v2/label_newline.py --pool $HOME/vfl-runs/vfl-select-v2/pool \
      --vfl research/nano_v2/results/v2_locate/locate-n40-w3/summary.json --out research/paper_on_v2/results/label_newline.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vfl import lora
from vfl.decision import load_vfls
from vfl.interventions import prefill, repeat_cache, suffix_inputs, visual_kv_dropped
from vfl.models import load
from vfl.nano.sample import FUNCTIONS
from vfl.select import NONE, ablations


@torch.inference_mode()
def both_labels(adapter, sample: dict, vfls: dict) -> dict:
    """{"now": label, "before": label}: the function whose VFL drop raises the mean answer loss most, or none."""
    inputs, labels = lora.encode(adapter, lora.open_image(sample), sample["turns"])
    if sample["image"] is None:
        return {"now": NONE, "before": NONE}
    ids, last = inputs["input_ids"][0], int((labels[0] != -100).nonzero().max())
    before = labels.clone()
    before[0, last + 1:] = ids[last + 1:]  # the template's newline after the end of turn, labelled as before
    interventions = ablations(vfls)
    prompt = adapter.prompt(inputs)
    start, rows = prompt.prefix_length, len(interventions)
    cache = repeat_cache(prefill(adapter, prompt), rows, adapter.model.config)
    with visual_kv_dropped(adapter, interventions, prompt.visual_span):
        logits = adapter.model(**suffix_inputs(adapter, prompt, rows), **adapter.cache_inputs(cache)).logits
    found = {}
    for key, span in (("now", labels), ("before", before)):
        losses = lora.answer_loss(logits, span[:, start:].expand(rows, -1)).tolist()
        scores = {f: loss - losses[0] for f, loss in zip(vfls, losses[1:])}
        best = max(scores, key=scores.get)
        found[key] = best if scores[best] > 0 else NONE
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, required=True, help="folder with pool.json and truth.json")
    parser.add_argument("--vfl", type=Path, required=True, help="summary.json of `vfl locate`")
    parser.add_argument("--model", default="nano")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    truth = json.loads((args.pool / "truth.json").read_text())
    samples = lora.load_conversations(args.pool / "pool.json")
    adapter, vfls = load(args.model), load_vfls(args.vfl)
    labels = {s["id"]: both_labels(adapter, s, vfls) for s in samples}
    clean = [i for i in labels if truth[i] in FUNCTIONS]
    result = {"vfl": vfls, "n_clean": len(clean), "changed": sum(v["now"] != v["before"] for v in labels.values())}
    for key in ("now", "before"):
        confusion: dict = {}
        for i, found in labels.items():
            row = confusion.setdefault(truth[i], {})
            row[found[key]] = row.get(found[key], 0) + 1
        result[key] = {"accuracy": sum(labels[i][key] == truth[i] for i in clean) / len(clean), "confusion": confusion}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"agreement on {len(clean)} clean samples: now {result['now']['accuracy']:.3f}, "
          f"before {result['before']['accuracy']:.3f}; {result['changed']} of {len(labels)} labels changed")


if __name__ == "__main__":
    main()
