"""Benchmark: can nano learn to read words it never saw, when OCR answers are spelled letter by letter?

SmolLM2's tokenizer writes most words as one or two tokens ("bear", "c|ow"). Of suite v2's 36 held-out
words only 6 are made wholly of tokens that appear in the 319 training words, and 15 are single tokens
that OCR training never asks the model to produce, so reading a held-out word means emitting an output
token no OCR sample trained. Spelled answers (`vfl nano train --ocr-answers letters`) use 26 single-letter
tokens, which every training word exercises; the answer decodes to the same string.

Each arm trains nano on suite v2's OCR samples alone (`--functions ocr`, streamed, the same samples in both
arms) with the same recipe, then answers ``--n`` held-out images (seed 1) of the training words, of the
held-out words and of pseudo-words (random letter strings, which only letter-by-letter reading can answer).
``--pseudo-words SHARE`` trains every arm with that share of its OCR samples showing pseudo-words;
``--align-words 1 --align-letters`` also aligns each letter's image tokens to its letter (`vfl.nano.align`). Besides exact matches it reports the mean character similarity (1 - edit distance / the
longer length) and the share of answers with the right first letter, which show progress before
whole words come right, how many distinct answers the model gives (a collapsed model gives few), and
the true word's negative log-likelihood in nats (teacher-forced, summed over the arm's own answer tokens
and <|im_end|>): how far the model is from giving the right word the highest probability.

  python research/nano_v2/ocr_answers.py --steps 400 --batch-size 16 --out runs/ocr-answers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vfl.errors import VflError
from vfl.evaluate import evaluate
from vfl.models import device_name, load
from vfl.nano.data import held_out_items
from vfl.nano.config import NanoSpec
from vfl.nano.config import OCR_ANSWERS, PRECISIONS, TrainConfig
from vfl.nano.batches import encoded, padded, spells, token_ids
from vfl.nano.loss import answer_loss
from vfl.nano.train import train
from vfl.nano.suite_v2 import SPLITS, make_question_sample


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def reading_scores(records: list[dict]) -> dict:
    """Exact matches, mean character similarity, right first letters and distinct answers of OCR records
    (``answer``: the model's, ``target``: the word)."""
    pairs = [(r["answer"].strip().lower(), r["target"].lower()) for r in records]
    return {"exact": round(sum(a == t for a, t in pairs) / len(pairs), 4),
            "char_similarity": round(sum(1 - edit_distance(a, t) / max(len(a), len(t), 1) for a, t in pairs)
                                     / len(pairs), 4),
            "first_letter": round(sum(a[:1] == t[:1] for a, t in pairs) / len(pairs), 4),
            "distinct_answers": len({a for a, _ in pairs}), "n": len(pairs)}


@torch.inference_mode()
def word_nats(adapter, config: TrainConfig, n: int, split: str, batch: int = 16) -> float:
    """Mean over the ``n`` held-out OCR samples (seed 1, the items `held_out_items` draws) of the true answer's
    negative log-likelihood, summed over its tokens as the arm was trained to write them, <|im_end|> included."""
    model, processor = adapter.model, adapter.processor
    image_tokens = config.spec.image_tokens
    pad = processor.tokenizer.pad_token_id or 0
    total = 0.0
    for start in range(0, n, batch):
        samples = [make_question_sample("ocr", i, 1, split=split) for i in range(start, min(n, start + batch))]
        tokens = [token_ids(processor, s.question, s.answer, image_tokens, spells("ocr", config.ocr_answers))
                  for s in samples]
        ids, labels, attention = padded([t[0] for t in tokens], [t[1] for t in tokens], pad)
        pixels = processor.image_processor([s.image for s in samples], return_tensors="pt")["pixel_values"]
        features = encoded(model, pixels.to(model.device), config.spec.vision_layers)
        _, per_token_mean = answer_loss(model, ids.to(model.device), labels.to(model.device),
                                        attention.to(model.device), features)
        total += (per_token_mean.cpu() * (labels[:, 1:] != -100).sum(1)).sum().item()
    return round(total / n, 3)


def arm_config(ocr_answers: str, args) -> TrainConfig:
    spec = NanoSpec(vision_layers=[6, 9, 12], lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank)
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, save_every=args.save_every,
                       spec=spec, data="stream", workers=args.workers, device=args.device, suite="v2",
                       precision=args.precision, lm_start=args.lm_start, lr_lm=args.lr_lm, functions=["ocr"],
                       ocr_answers=ocr_answers, pseudo_words=args.pseudo_words, align_words=args.align_words,
                       align_letters=args.align_letters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(OCR_ANSWERS), help="comma-separated: " + ", ".join(OCR_ANSWERS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-rank", type=int, default=64, help="0: the projector alone")
    parser.add_argument("--lm-start", type=float, default=0.1, help="share of steps before the LoRA joins")
    parser.add_argument("--lr-lm", type=float, default=5e-4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16", choices=PRECISIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--pseudo-words", type=float, default=0.0, metavar="SHARE",
                        help="share of the OCR training samples showing random letter strings (every arm)")
    parser.add_argument("--align-words", type=float, default=0.0, metavar="WEIGHT",
                        help="word alignment's weight (every arm); on OCR images it acts only with --align-letters")
    parser.add_argument("--align-letters", action="store_true",
                        help="align each letter's tokens to its letter and ink (`vfl.nano.align.GLYPHS`)")
    parser.add_argument("--n", type=int, default=100, help="held-out images per word list")
    parser.add_argument("--out", type=Path, default=Path("runs/ocr-answers"))
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - set(OCR_ANSWERS):
        parser.error(f"--arms takes {', '.join(OCR_ANSWERS)}, got {args.arms!r}")
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    try:
        configs = {arm: arm_config(arm, args) for arm in arms}
        for config in configs.values():
            config.check()
        results = {}
        for arm, config in configs.items():
            done = args.out / arm / "scores.json"
            if not done.exists():  # a killed run resumes its training; a scored arm is not scored again
                started = time.perf_counter()
                train(args.out / arm, config)
                seconds = round(time.perf_counter() - started, 1)
                adapter = load(f"nano:{args.out / arm / 'weights'}", device=args.device)
                scores = {"arm": arm, "steps": config.steps, "batch_size": config.batch_size,
                          "ocr_samples": config.steps * config.batch_size, "train_s_last_call": seconds,
                          "device": device_name(args.device), "precision": config.precision,
                          "lora_rank": config.spec.lora_rank, "pseudo_words": config.pseudo_words,
                          "align_words": config.align_words, "align_letters": config.align_letters}
                for split in SPLITS:
                    items = held_out_items(["ocr"], args.n, 1, "v2", split=split)
                    _, records = evaluate(adapter, items, 32, 16)
                    scores[split] = {**reading_scores(records), "word_nats": word_nats(adapter, config, args.n, split)}
                    scores[split]["examples"] = [[r["target"], r["answer"]] for r in records[:8]]
                done.write_text(json.dumps(scores, indent=2) + "\n")
            results[arm] = json.loads(done.read_text())
    except VflError as err:
        sys.exit(f"ocr_answers.py: error: {err}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| answers | words | exact | char similarity | first letter | distinct answers | word nats | n |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, scores in results.items():
        for split in [s for s in SPLITS if s in scores]:
            s = scores[split]
            print(f"| {arm} | {split} | {s['exact']:.3f} | {s['char_similarity']:.3f} | {s['first_letter']:.3f} "
                  f"| {s['distinct_answers']} | {s.get('word_nats', '-')} | {s['n']} |")
    print(f"results: {args.out / 'results.json'} (device: {next(iter(results.values()))['device']})")


if __name__ == "__main__":
    main()
