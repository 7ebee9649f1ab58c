"""Benchmark: VFL-LoRA against full, reversed and random LoRA on nano (the paper's forgetting table).

The in-domain skill (``--skill``) is one nano lacks but one of its functions covers:

  count-7-10     counting 7 to 10 objects (nano was trained on 1 to 6): the counting VFL
  ocr-new-words  reading, in the style nano reads (suite v1: one word), the 35 words of suite v2's held-out
                 vocabulary that nano's 60 training words do not include: the OCR VFL
  ground-among   grounding the asked object among 1-3 distractors of other kinds (suite v2's grounding; nano
                 was trained on scenes of one object): the grounding VFL
  recog-crowd    recognition with binding distractors in scenes of 7-9 objects (suite v2's recognition with
                 4 more distractors; nano was trained on 3-5): the recognition VFL

Every variant trains with the same recipe, steps and seed on the same LLaVA-format data; only the decoder
layers that carry LoRA differ:

  vfl       the skill's function's VFL from a `vfl locate` summary of nano
  all       every decoder layer (full LoRA)
  reversed  as many layers, the VFL mirrored in depth
  random    as many layers, random outside the VFL (seeded)

Each variant is then measured on: in-domain (the skill, held-out seed), every function of nano's
own held-out suite (out of domain: what was forgotten), and a text-only set of short questions (the
language model's own skills: greedy accuracy and the mean loss of the reference answers). Accuracies
carry 95% Wilson intervals; `--seeds 0,1,2` repeats the whole comparison. Rows go to
`OUT/results.jsonl` as they finish (a killed run continues where it stopped) and the table to
`OUT/table.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from vfl import lora
from vfl.evaluate import evaluate
from vfl.jsonl import json_objects
from vfl.metrics import wilson
from vfl.models import load
from vfl.nano.data import held_out_items, sample_maker
from vfl.nano.sample import FUNCTIONS
from vfl.probes.questions import HELD_OUT
from vfl.probes.render import WORDS
from vfl.report import mean_sd

RULES = ("vfl", "all", "reversed", "random")
# rows without "labels" were written before 2026-12-07, when vfl.lora.encode also labelled the template's newline
# after the end of turn: they must not be averaged with newer seeds
OLD_LABELS = "past end of turn"
NEW_WORDS = tuple(w for w in HELD_OUT if w not in WORDS)


@dataclass(frozen=True)
class Skill:
    """What the LoRA is taught: the function whose VFL it targets, the suite and the options of its samples
    that make the skill (training images from seed 100, in-domain evaluation from seed 101)."""
    function: str
    label: str
    options: dict
    suite: str = "v1"


SKILLS = {"count-7-10": Skill("count", "count 7-10", {"counts": (7, 10)}),
          "ocr-new-words": Skill("ocr", f"OCR of {len(NEW_WORDS)} new words", {"words": NEW_WORDS}),
          "ground-among": Skill("ground", "ground among distractors", {}, suite="v2"),
          "recog-crowd": Skill("recog", "recog among 7-9 objects", {"crowd": 4}, suite="v2")}

# The language model's own skills, asked without an image; answers SmolLM2-135M-Instruct gives untouched.
TEXT_QA = [
    ("What is the capital of France? Answer with one word.", "Paris"),
    ("What is the capital of Italy? Answer with one word.", "Rome"),
    ("What is the capital of Japan? Answer with one word.", "Tokyo"),
    ("What is the capital of Germany? Answer with one word.", "Berlin"),
    ("What is the capital of Spain? Answer with one word.", "Madrid"),
    ("What colour is the sky on a clear day? Answer with one word.", "blue"),
    ("What colour is grass? Answer with one word.", "green"),
    ("How many days are in a week? Answer with a number.", "7"),
    ("How many legs does a spider have? Answer with a number.", "8"),
    ("How many hours are in a day? Answer with a number.", "24"),
    ("What is 2 plus 2? Answer with a number.", "4"),
    ("What is 10 minus 3? Answer with a number.", "7"),
    ("Which planet do we live on? Answer with one word.", "Earth"),
    ("What is frozen water called? Answer with one word.", "ice"),
    ("What animal says meow? Answer with one word.", "cat"),
    ("What animal barks? Answer with one word.", "dog"),
    ("What is the opposite of hot? Answer with one word.", "cold"),
    ("What is the opposite of up? Answer with one word.", "down"),
    ("Which season comes after winter? Answer with one word.", "spring"),
    ("What do bees make? Answer with one word.", "honey"),
]


def write_training_set(folder: Path, n: int, seed: int, skill: Skill) -> Path:
    """``n`` samples of the skill as LLaVA conversation data (train.json + images/)."""
    path = folder / "train.json"
    if path.exists():
        return path
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        sample = sample_maker(skill.suite)(skill.function, i, seed, **skill.options)
        sample.image.save(folder / "images" / f"{i:05d}.png")
        records.append({"id": f"{skill.function}-{i}", "image": f"images/{i:05d}.png", "conversations": [
            {"from": "human", "value": "<image>\n" + sample.question}, {"from": "gpt", "value": sample.answer}]})
    path.write_text(json.dumps(records) + "\n")
    return path


def text_skills(adapter) -> dict:
    """Greedy accuracy on TEXT_QA (the reference word in the answer) and the references' mean token loss."""
    tokenizer, model = adapter.tokenizer, adapter.model
    hits, losses = 0, []
    for question, reference in TEXT_QA:
        messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
        prompt = adapter.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
            said = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            hits += reference.lower() in said.lower()
            full = tokenizer(prompt + reference, return_tensors="pt", add_special_tokens=False).input_ids
            full = full.to(model.device)
            labels = full.clone()
            labels[:, : ids.shape[1]] = -100
            losses.append(model(input_ids=full, attention_mask=torch.ones_like(full), labels=labels).loss.item())
    return {"accuracy": hits / len(TEXT_QA), "n": len(TEXT_QA), "ci": list(wilson(hits, len(TEXT_QA))),
            "loss": sum(losses) / len(losses)}


def measure(adapter, args) -> dict:
    adapter.model.eval()
    skill = SKILLS[args.skill]
    in_domain, _ = evaluate(adapter, held_out_items([skill.function], args.eval_n, 101, skill.suite, **skill.options),
                            batch_size=args.eval_batch)
    ood, _ = evaluate(adapter, held_out_items(FUNCTIONS, args.ood_n, 1), batch_size=args.eval_batch)
    return {"in_domain": in_domain[skill.function], "ood": ood, "text": text_skills(adapter)}


def cell(row: dict) -> str:
    return f"{row['accuracy']:.2f} ({row['ci'][0]:.2f}-{row['ci'][1]:.2f})"


def ood_mean(row: dict) -> float:
    return sum(row["ood"][f]["accuracy"] for f in FUNCTIONS) / len(FUNCTIONS)


def table(rows: list[dict], skill: Skill) -> str:
    head = (f"| variant | seed | layers | trainable (share) | train s | in-domain {skill.label} | "
            + " | ".join(f"{f} (ood)" for f in FUNCTIONS) + " | ood mean | text acc | text loss |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        trainable = f"{r['trainable']:,} ({100 * r['share']:.2f}%)" if r["trainable"] else "0"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['layers']} | {trainable} | {r['train_s']:.0f} | "
                     f"{cell(r['in_domain'])} | " + " | ".join(cell(r["ood"][f]) for f in FUNCTIONS)
                     + f" | {ood_mean(r):.3f} | {cell(r['text'])} | {r['text']['loss']:.3f} |")
    return "\n".join(lines)


def summary(rows: list[dict], skill: Skill) -> str:
    """The paper's shape: one line per variant, mean ± sd over seeds; forgetting is the fall of the
    out-of-domain mean from the untouched model's; then each seed's in-domain gap of VFL over full LoRA."""
    base = next((ood_mean(r) for r in rows if r["variant"] == "none"), None)
    head = (f"| variant | seeds | trainable (share) | in-domain {skill.label} | "
            + " | ".join(f"{f} (ood)" for f in FUNCTIONS) + " | ood mean | forgetting | text acc |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for variant in ("none", *RULES):
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        trainable = f"{mine[0]['trainable']:,} ({100 * mine[0]['share']:.2f}%)" if mine[0]["trainable"] else "0"
        forgetting = mean_sd([base - ood_mean(r) for r in mine]) if base is not None else "-"
        lines.append(f"| {variant} | {len(mine)} | {trainable} | {mean_sd([r['in_domain']['accuracy'] for r in mine])} | "
                     + " | ".join(mean_sd([r["ood"][f]["accuracy"] for r in mine]) for f in FUNCTIONS)
                     + f" | {mean_sd([ood_mean(r) for r in mine])} | {forgetting} | "
                     + f"{mean_sd([r['text']['accuracy'] for r in mine])} |")
    by_seed = {(r["variant"], r["seed"]): r for r in rows}
    gaps = [by_seed["vfl", s]["in_domain"]["accuracy"] - by_seed["all", s]["in_domain"]["accuracy"]
            for v, s in by_seed if v == "vfl" and ("all", s) in by_seed]
    if gaps:
        lines.append(f"\nin-domain, VFL-LoRA minus full LoRA, per seed: {', '.join(f'{g:+.3f}' for g in gaps)}"
                     f" (mean {mean_sd(gaps)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vfl", type=Path, required=True, help="summary.json of `vfl locate` on nano")
    parser.add_argument("--skill", default="count-7-10", choices=SKILLS, help="what the LoRA is taught (see above)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train-n", type=int, default=400)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=lora.LoraRun.lr, help="LoRA learning rate (the paper's by default)")
    parser.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass (raise it on a GPU)")
    parser.add_argument("--eval-n", type=int, default=200, help="in-domain evaluation samples")
    parser.add_argument("--ood-n", type=int, default=50, help="evaluation samples per nano function")
    parser.add_argument("--eval-batch", type=int, default=16,
                        help="items answered together (greedy generate, left-padded; 1 answers one at a time)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: runs/vfl-lora-SKILL)")
    parser.add_argument("--model", default="nano",
                        help="the base model: nano, or a trained run's weights as nano:DIR (`vfl nano train`)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    skill = SKILLS[args.skill]
    args.out = args.out or Path(f"runs/vfl-lora-{args.skill}")

    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [r for _, r in json_objects(results, "results")] if results.exists() else []
    other = {r.get("skill", "count-7-10") for r in rows} - {args.skill}
    if other:
        sys.exit(f"vfl_lora.py: error: {args.out} holds results of --skill {other.pop()}; use another --out")
    recipes = {(r.get("steps", args.steps), r.get("lr", lora.LoraRun.lr), r.get("labels", OLD_LABELS))
               for r in rows if r["variant"] != "none"}
    if recipes - {(args.steps, args.lr, lora.LABELS)}:
        steps, lr, labels = (recipes - {(args.steps, args.lr, lora.LABELS)}).pop()
        sys.exit(f"vfl_lora.py: error: {args.out} holds rows trained with --steps {steps} --lr {lr}, labels {labels}; "
                 "use another --out for another recipe")
    done = {(r["variant"], r["seed"]) for r in rows}
    vfl = lora.vfl_layers(args.vfl, skill.function)
    samples = lora.load_conversations(write_training_set(args.out / "data", args.train_n, 100, skill))

    def record(row: dict) -> None:
        row = {"skill": args.skill, "eval_batch": args.eval_batch, "steps": args.steps, "lr": args.lr,
               "labels": lora.LABELS, **row}
        rows.append(row)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if ("none", 0) not in done:
        record({"variant": "none", "seed": 0, "layers": "-", "trainable": 0, "share": 0.0, "train_s": 0.0,
                **measure(load(args.model, device=args.device), args)})
    for seed in [int(s) for s in args.seeds.split(",")]:
        for rule in RULES:
            if (rule, seed) in done:
                continue
            adapter = load(args.model, device=args.device)
            layers = lora.choose_layers(rule, adapter.num_layers, vfl, seed)
            run = lora.LoraRun(steps=args.steps, batch_size=args.batch_size, micro_batch=args.micro_batch, seed=seed,
                               lr=args.lr, save_every=10)
            adapter_dir = lora.train(adapter, samples, layers, run, args.out / f"{rule}-s{seed}",
                                     {"model": args.model, "rule": rule, "vfl": vfl})
            trainable = json.loads((args.out / f"{rule}-s{seed}" / "trainable.json").read_text())
            merged = lora.with_adapter(load(args.model, device=args.device), adapter_dir)
            record({"variant": rule, "seed": seed, "layers": ",".join(map(str, layers)),
                    "trainable": trainable["trainable"], "share": trainable["share"], "train_s": trainable["train_s"],
                    **measure(merged, args)})
    text = table(rows, skill) + "\n\n" + summary(rows, skill)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
