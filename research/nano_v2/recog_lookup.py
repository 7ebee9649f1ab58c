"""Benchmark: where does recognition's lookup stop training, between text and nano's image tokens?

On suite v2 recognition ("Is there a red circle?" among a red square and a blue circle) nano's loss sits at
ln 2 for 300 CPU steps, though the same model learns to caption those scenes exactly. This trains the language
model alone (nano's LoRA, rate, schedule and batch) on the same recognition samples, with the image replaced
by the scene written in one of three forms, each a step closer to image tokens, and scores held-out items
(seed 1) every few steps:

* ``text``: the caption, "Objects: red square, blue circle, red circle." (words the language model knows);
* ``kinds``: one learnt vector per object in place of its words, row by row (28 kinds; colour and shape bound
  in one vector the language model has never seen, as in an image token; trained as the projector is);
* ``grid``: 64 such vectors in the image's 8 x 8 token grid, each cell the kind of the object covering most of
  it or a learnt background vector (nano's layout: objects span 1-4 cells, most cells are background).

Where a form trains and the next does not, that difference is what stalls nano. ``--init words`` starts each
kind's vector at the mean of its words' embeddings, as a projector trained to write words would.

  python research/nano_v2/recog_lookup.py --scene text --steps 300 --out research/nano_v2/results/recog_lookup_text.json
  python research/nano_v2/recog_lookup.py --plot research/nano_v2/results/recog_lookup_*.json --out research/nano_v2/nano-recog-lookup.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from vfl.metrics import wilson
from vfl.nano import parts
from vfl.nano.align import KINDS, NO_KIND, cell_kinds
from vfl.nano.batches import answer_ids
from vfl.nano.model import CHAT_TEMPLATE
from vfl.nano.suite_v2 import describe_caption, in_rows, make_question_sample

SCENES = ("text", "kinds", "grid")
INITS = ("random", "words")
LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
BACKGROUND = len(KINDS)  # the grid's empty cells
GRID, CELL = 8, 28  # nano's 64 image tokens: 224 px in 28 px cells


def grid_cells(scene) -> list[int]:
    """The kind index of each of the 64 cells, row by row: the object that covers most of the cell, else
    background (the cells nano's word alignment trains, `vfl.nano.align.cell_kinds`)."""
    return [BACKGROUND if kind == NO_KIND else kind for kind in cell_kinds(scene, GRID * CELL, CELL)]


def scene_slots(sample, scene: str) -> tuple[str, list[int]]:
    """What stands where nano's image is: the caption's text, or the kinds of the learnt vectors."""
    if scene == "text":
        return f"Objects: {describe_caption(sample.scene)}.", []
    if scene == "kinds":
        return "", [KINDS.index((t.shape, t.colour)) for t in in_rows(sample.scene)]
    return "", grid_cells(sample.scene)


def prompt_ids(tokenizer, sample, scene: str) -> tuple[list[int], list[int]]:
    """The prompt in nano's template, and per position the learnt vector's kind (-1: a text token)."""
    text, slots = scene_slots(sample, scene)
    head = tokenizer("<|im_start|>user\n", add_special_tokens=False).input_ids
    messages = [{"role": "user", "content": f"{text}\n{sample.question}"}]
    full = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, add_generation_prompt=True,
                                         tokenize=False)
    tail = tokenizer(full[len("<|im_start|>user\n"):], add_special_tokens=False).input_ids
    return head + [0] * len(slots) + tail, [-1] * len(head) + slots + [-1] * len(tail)


def samples(seed: int, n: int, split: str, loose: bool, start: int = 0) -> list:
    return [make_question_sample("recog", i, seed, split=split, binding=not loose) for i in range(start, start + n)]


def padded(rows: list[tuple[list[int], ...]], pad: int, left: bool = False) -> list[torch.Tensor]:
    """Each column of ``rows`` padded to one width (ids with ``pad``, kinds with -1, labels with -100), and the
    attention mask."""
    width = max(len(r[0]) for r in rows)
    fills = [pad, -1, -100][:len(rows[0])]
    tensors = [torch.full((len(rows), width), fill) for fill in fills]
    tensors.append(torch.zeros((len(rows), width), dtype=torch.long))
    for r, row in enumerate(rows):
        span = slice(width - len(row[0]), width) if left else slice(0, len(row[0]))
        for tensor, column in zip(tensors, row):
            tensor[r, span] = torch.tensor(column)
        tensors[-1][r, span] = 1
    return tensors


def hidden_states(model, table, ids, kinds, mask) -> torch.Tensor:
    """The language model's last hidden states with the learnt vectors where ``kinds`` >= 0."""
    causal_lm = model.get_base_model()
    embeds = causal_lm.model.embed_tokens(ids)
    slots = kinds >= 0
    embeds = embeds.masked_scatter(slots.unsqueeze(-1), table(kinds[slots]).to(embeds.dtype))
    return causal_lm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state


def answer_loss(model, table, tokenizer, batch: list, scene: str) -> torch.Tensor:
    """Token-mean cross-entropy on the answer and <|im_end|>, the vocabulary projected there only (as nano's
    training)."""
    rows = []
    for sample in batch:
        ids, kinds = prompt_ids(tokenizer, sample, scene)
        answer = answer_ids(tokenizer, sample.answer)
        rows.append((ids + answer, kinds + [-1] * len(answer), [-100] * len(ids) + answer))
    ids, kinds, labels, mask = padded(rows, tokenizer.pad_token_id or 0)
    hidden = hidden_states(model, table, ids, kinds, mask)
    targets = labels[:, 1:]
    chosen = targets != -100
    logits = model.get_base_model().lm_head(hidden[:, :-1][chosen])
    return torch.nn.functional.cross_entropy(logits.float(), targets[chosen])


@torch.inference_mode()
def accuracy(model, table, tokenizer, items: list, scene: str) -> dict:
    """Greedy first answer token against "yes"/"no", as `vfl nano eval` reads a one-word answer."""
    hits = 0
    for i in range(0, len(items), 50):
        chunk = items[i:i + 50]
        ids, kinds, mask = padded([prompt_ids(tokenizer, s, scene) for s in chunk], tokenizer.pad_token_id or 0,
                                  left=True)
        logits = model.get_base_model().lm_head(hidden_states(model, table, ids, kinds, mask)[:, -1])
        said = tokenizer.batch_decode(logits.argmax(-1)[:, None])
        hits += sum(word.strip().lower() == s.answer for word, s in zip(said, chunk))
    low, high = wilson(hits, len(items))
    return {"accuracy": round(hits / len(items), 3), "ci": [round(low, 3), round(high, 3)], "n": len(items)}


@torch.no_grad()
def initialise(table, embed, tokenizer, init: str) -> None:
    """Random vectors at the word embeddings' scale; or (``words``) each kind's vector the mean of the embeddings
    of " red circle"'s tokens, and the background random, as a projector aligned with the words would give."""
    table.weight.normal_(0, embed.weight.std().item())
    if init == "words":
        for k, (shape, colour) in enumerate(KINDS):
            ids = tokenizer(f" {colour} {shape}", add_special_tokens=False).input_ids
            table.weight[k] = embed(torch.tensor(ids)).mean(0)


def plot_curves(results: list[Path], out: Path) -> None:
    """Held-out accuracy against steps, one line per results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    for path in results:
        result = json.loads(Path(path).read_text())
        settings, curve = result["settings"], result["curve"]
        label = {"text": "its caption's words", "grid": "8 x 8 grid of learnt vectors"}.get(
            settings["scene"], "a learnt vector per object")
        if settings["scene"] != "text":
            label += ", started at its words" if settings.get("init") == "words" else ", random start"
        axes.plot([c["step"] for c in curve], [c["accuracy"] for c in curve], marker="o", label=label)
    axes.axhline(0.5, color="grey", lw=0.8, ls=":")
    axes.set(xlabel="training step (32 samples)", ylabel="held-out recognition (v2, n 200)", ylim=(0, 1.05),
             title="SmolLM2 + LoRA r64 learning v2 recognition, the scene as ...")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", choices=SCENES, default="text")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4, help="the LoRA's rate")
    parser.add_argument("--lr-vectors", type=float, default=1e-3, help="the learnt vectors' rate (nano's projector's)")
    parser.add_argument("--init", choices=INITS, default="random",
                        help="the learnt vectors' start: random, or the mean of their colour's and shape's words' "
                             "embeddings")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--loose", action="store_true", help="distractors of any other kind (no binding)")
    parser.add_argument("--every", type=int, default=50, help="score the held-out items every this many steps")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", type=Path, help="results JSON (with --plot: the figure)")
    parser.add_argument("--plot", type=Path, nargs="+", help="draw these results' curves into --out instead")
    args = parser.parse_args()
    if args.plot:
        return plot_curves(args.plot, args.out)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    lm_dir = parts.smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules=LORA_TARGETS))
    table = torch.nn.Embedding(len(KINDS) + 1, model.config.hidden_size)
    initialise(table, model.get_input_embeddings(), tokenizer, args.init)
    held_out = samples(1, args.n, "held_out", args.loose)
    lora = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": lora, "lr": args.lr},
                                   {"params": list(table.parameters()), "lr": args.lr_vectors}], weight_decay=0.0)
    warmup = max(1, int(0.03 * args.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                  0.5 * (1 + math.cos(math.pi * (s - warmup) / (args.steps - warmup))))
    model.eval()
    curve = [{"step": 0, **accuracy(model, table, tokenizer, held_out, args.scene)}]
    print(curve[-1], flush=True)
    losses, started = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        batch = samples(0, args.batch_size, "train", args.loose, start=(step - 1) * args.batch_size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = answer_loss(model, table, tokenizer, batch, args.scene)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora + list(table.parameters()), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(round(loss.item(), 4))
        if step % args.every == 0 or step == args.steps:
            model.eval()
            recent = losses[-args.every:]
            curve.append({"step": step, "loss": round(sum(recent) / len(recent), 4),
                          **accuracy(model, table, tokenizer, held_out, args.scene)})
            print(curve[-1], f"{time.time() - started:.0f} s", flush=True)
    result = {"what": __doc__.splitlines()[0], "settings": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in vars(args).items()},
              "seconds": round(time.time() - started), "curve": curve, "losses": losses}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
