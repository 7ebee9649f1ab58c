"""Benchmark: each function's share of nano's training gradient, under the token-mean loss and under
per-sample means weighted by function (`vfl nano train --loss-weights`).

A grounding answer is 25 tokens, a yes/no or a count 2 and a word about 3, so the token mean gives a
box's tokens more than ten times a yes/no's weight. Whether that starves the other functions depends on
the gradients, not on the token counts: this measures them. For each function it draws ``--n`` fresh v2
samples (seed 7, never trained on), takes the gradient of their token-mean answer loss with respect to
the projector or the language model's linear weights (``--params``), and weighs it as each loss would:
by the function's share of the answer tokens (token mean), or by its share of ``--loss-weights``. It
prints each function's share of the summed gradient norms, and its answer loss per token.

  python research/nano_v2/loss_shares.py --weights runs/nano-v2-cpu --params lm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vfl.options import function_weights
from vfl.errors import VflError
from vfl.models import nano_weights
from vfl.nano.sample import FUNCTIONS
from vfl.nano.config import NanoSpec
from vfl.nano.model import apply_trained, build_untrained
from vfl.nano.batches import collate, encoded, StreamSamples
from vfl.nano.loss import answer_loss


def function_gradients(model, processor, spec: NanoSpec, params: str, n: int, seed: int,
                       precision: str = "bf16") -> dict:
    """{function: (answer loss per token, answer tokens per sample, flat gradient)} over n samples each."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if params == "projector":
        chosen = list(model.model.multi_modal_projector.parameters())
    else:
        chosen = [p for name, p in model.model.language_model.named_parameters() if name.endswith("proj.weight")]
    for parameter in chosen:
        parameter.requires_grad_(True)
    samples = StreamSamples(processor, seed=seed, image_tokens=spec.image_tokens, suite="v2")
    pad = processor.tokenizer.pad_token_id or 0
    found = {}
    for index, function in enumerate(FUNCTIONS):
        ids, labels, attention, pixels, _, _ = collate([samples[len(FUNCTIONS) * i + index] for i in range(n)], pad)
        with torch.no_grad():
            features = encoded(model, pixels, spec.vision_layers)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = answer_loss(model, ids, labels, attention, features)
        gradient = torch.cat([g.flatten().float() for g in torch.autograd.grad(loss, chosen)])
        found[function] = (loss.item(), int((labels[:, 1:] != -100).sum()) / n, gradient)
    return found


def shares(found: dict, weights: dict[str, float] | None) -> dict[str, float]:
    """Each function's share of the summed gradient norms, as the loss would weigh its gradient."""
    if weights is None:
        tokens = sum(t for _, t, _ in found.values())
        scale = {f: t / tokens for f, (_, t, _) in found.items()}
    else:
        total = sum(weights.get(f, 1.0) for f in found)
        scale = {f: weights.get(f, 1.0) / total for f in found}
    norms = {f: (scale[f] * g).norm().item() for f, (_, _, g) in found.items()}
    return {f: round(v / sum(norms.values()), 3) for f, v in norms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None,
                        help="a `vfl nano train` run folder (None: a fresh projector on nano's parts, as at step 0)")
    parser.add_argument("--params", default="lm", choices=("projector", "lm"))
    parser.add_argument("--n", type=int, default=16, help="samples per function")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--loss-weights", type=function_weights, default={"ground": 2.0},
                        help="the per-sample weighting to set against the token mean (besides equal weights)")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                        help="the forward pass's (bf16 autocast, as measured; fp32 where bf16 is emulated)")
    parser.add_argument("--out", type=Path, help="write the shares as JSON here")
    args = parser.parse_args()
    try:
        if args.weights is None:
            spec = NanoSpec(vision_layers=[6, 9, 12], lora_rank=64, lora_alpha=128)
            model, processor = build_untrained(spec)
        else:
            folder = nano_weights(f"nano:{args.weights}")
            spec = NanoSpec(**json.loads((folder / "spec.json").read_text()))
            model, processor = build_untrained(spec)
            model = apply_trained(model, spec, folder)
    except VflError as err:
        sys.exit(f"loss_shares.py: error: {err}")
    found = function_gradients(model, processor, spec, args.params, args.n, args.seed, args.precision)
    result = {"weights": str(args.weights), "params": args.params, "n": args.n, "seed": args.seed,
              "loss_per_token": {f: round(found[f][0], 4) for f in FUNCTIONS},
              "answer_tokens": {f: found[f][1] for f in FUNCTIONS},
              "token mean": shares(found, None), "per-sample, equal": shares(found, {}),
              f"per-sample, {','.join(f'{k}={v:g}' for k, v in args.loss_weights.items())}":
                  shares(found, args.loss_weights)}
    print(f"| loss | {' | '.join(FUNCTIONS)} |\n|---|" + "---|" * len(FUNCTIONS))
    for label in list(result)[6:]:
        print(f"| {label} | " + " | ".join(f"{result[label][f]:.2f}" for f in FUNCTIONS) + " |")
    print("answer loss per token: " + ", ".join(f"{f} {result['loss_per_token'][f]:.3f}" for f in FUNCTIONS))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
