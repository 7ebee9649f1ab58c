"""Benchmark: what nano's visual tokens carry, layer by layer, before any training (linear probes).

nano v1 and every GPU recipe so far stall at recognition ~0.68 on "is there a red circle?" among
distractors (`research/nano_v2/recog_shortcut.py` later found why: they count the objects). One candidate cause is the encoder side: if a visual token of DINOv2-S (after nano's per-layer
LayerNorm and 2x2 shuffle) does not carry an object's colour *and* shape together, no projector can bind
them. This probes each encoder layer's tokens, as the projector sees them, for the object under the token:

  colour   7 colours + background        shape   4 shapes + background
  kind     colour and shape together (28 kinds + background): what recognition needs

Accuracy is scored on the object tokens only (chance: 1/7, 1/4, 1/28). A last column answers the held-out
recognition scenes with the kind probe alone ("yes" iff some token is read as the asked kind): what a
linear reader of the tokens reaches with no language model (nano's recognition: 0.68 on v2). A probe on the token's own pixels
(the 28 x 28 x 3 values the encoder receives) is the ceiling: the information is in the image.

A token (28 x 28 px) is labelled by the object covering most of it (at least a quarter of it; tokens
under a smaller part of an object are left out). Images are suite v2 scenes (counting, grounding and
recognition scenes, with distractors). Each probe is a multinomial logistic regression on standardised
features, trained on one set of images and scored on another; background tokens are subsampled to the
number of object tokens. ``--raw`` adds the same probes on the tokens without DINOv2's final LayerNorm.
``--where language-model`` follows the tokens into the trained model instead: the projector's output and
the language model's hidden states at the visual positions, every fifth layer (``--model nano:DIR`` for a
training run), to see where along the path the kind is lost.

``--task letters`` asks the same of reading, for OCR: each image holds 8 lowercase letters at v2 OCR's
font sizes (31-43 px) and inks, each in its own token with a random shift inside it, and the probe reads
which of the 26 letters (or background) a token holds. It is an upper bound for words, whose letters
straddle tokens: if a token cannot tell its letter here, no projector can spell an unseen word.

  python research/nano_v2/encoder_probe.py --images 600 --raw --out research/nano_v2/results/encoder_probe.json
  python research/nano_v2/encoder_probe.py --task letters --images 300 --out research/nano_v2/results/encoder_probe_letters.json
  python research/nano_v2/encoder_probe.py --images 600 --where language-model --out research/nano_v2/results/encoder_probe_lm.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from vfl.nano.suite_v2 import make_question_sample
from vfl.nano.vision import pixel_shuffle
from vfl.probes.questions import INKS, asked_kind
from vfl.probes.render import BACKGROUND, COLOURS, SHAPES

CELL = 28  # pixels per visual token at 224 px: a 2x2 block of 14 px patches
KINDS = [(s, c) for s in SHAPES for c in COLOURS]


def token_labels(scene, size: int = 224) -> list[tuple[str, str] | None | str]:
    """Per token (row-major, 8x8): the (shape, colour) covering at least a quarter of it, ``None`` for
    background, ``"mixed"`` where an object covers less than a quarter (left out of every probe)."""
    labels = []
    for row in range(size // CELL):
        for col in range(size // CELL):
            x0, y0 = col * CELL, row * CELL
            best, area = None, 0
            for thing in scene:
                bx0, by0, bx1, by1 = thing.box
                overlap = max(0, min(x0 + CELL, bx1) - max(x0, bx0)) * max(0, min(y0 + CELL, by1) - max(y0, by0))
                if overlap > area:
                    best, area = (thing.shape, thing.colour), overlap
            labels.append(best if area >= CELL * CELL / 4 else (None if area == 0 else "mixed"))
    return labels


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def letter_image(rng: random.Random, size: int = 224, per_image: int = 8):
    """An image of ``per_image`` letters, each inside its own token (random cell, shift, font size and ink),
    and the label of each token: the letter's index, or 26 for background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    side = size // CELL
    labels = [len(LETTERS)] * side * side
    for cell in rng.sample(range(side * side), per_image):
        letter, ink = rng.choice(LETTERS), INKS[rng.choice(list(INKS))]
        font = ImageFont.load_default(size=int(size // 6 * rng.uniform(0.85, 1.15)))
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        x = (cell % side) * CELL + (CELL - (right - left)) / 2 - left + rng.uniform(-4, 4)
        y = (cell // side) * CELL + (CELL - (bottom - top)) / 2 - top + rng.uniform(-4, 4)
        draw.text((x, y), letter, fill=ink, font=font)
        labels[cell] = LETTERS.index(letter)
    return image, labels


def letter_rows(tower, processor, images: int, steps: int) -> list[dict]:
    """Per encoder output (and the pixels, and nano's 6+9+12): the letter probe's accuracy on letter tokens
    of held-out images (chance 1/26), trained with background tokens subsampled to the letters' number."""
    splits = {}
    for split, seed in (("train", 0), ("test", 1)):
        rng = random.Random(f"letters:{seed}")
        drawn = [letter_image(rng) for _ in range(images)]
        labels = torch.tensor([row for _, row in drawn])
        letters, background = (labels < len(LETTERS)).nonzero(), (labels == len(LETTERS)).nonzero()
        keep = torch.randperm(len(background), generator=torch.Generator().manual_seed(seed))[:len(letters)]
        where = torch.cat([letters, background[keep]])
        layers = features(tower, processor, [image for image, _ in drawn], raw=False)
        splits[split] = ([layer[where[:, 0], where[:, 1]] for layer in layers], labels[where[:, 0], where[:, 1]])
    (train_layers, train_y), (test_layers, test_y) = splits["train"], splits["test"]
    probes = {"pixels": [0]} | {f"layer {k}": [k + 1] for k in range(len(train_layers) - 1)} | \
        {"layers 6+9+12 (nano)": [7, 10, 13]}
    rows = []
    for name, chosen in probes.items():
        predict = fit_probe(torch.cat([train_layers[k] for k in chosen], -1), train_y, steps)
        read = predict(torch.cat([test_layers[k] for k in chosen], -1))
        row = {"layers": name, "letter": round((read == test_y)[test_y < len(LETTERS)].float().mean().item(), 3)}
        rows.append(row)
        print(f"{name:27s} letter {row['letter']:.3f}", flush=True)
    return rows


def features(tower, processor, images, raw: bool) -> list[torch.Tensor]:
    """The pixels of each token's 28 x 28 px (as the encoder receives them), then per encoder output
    k = 0..12: (images, 64, 4 x 384) tokens, as nano's projector reads them (``raw``: without the final
    LayerNorm)."""
    layers = None
    for start in range(0, len(images), 32):
        pixels = processor.image_processor(images[start:start + 32], return_tensors="pt")["pixel_values"]
        side = pixels.shape[-1] // CELL
        cells = pixels.unfold(2, CELL, CELL).unfold(3, CELL, CELL)  # (B, 3, 8, 8, 28, 28)
        cells = cells.permute(0, 2, 3, 1, 4, 5).reshape(len(pixels), side * side, -1)
        with torch.no_grad():
            hidden = tower.encoder(pixel_values=pixels, output_hidden_states=True).hidden_states
            norm = (lambda h: h) if raw else tower.encoder.layernorm
            chunk = [cells] + [pixel_shuffle(norm(h)[:, 1:], tower.config.shuffle) for h in hidden]
        layers = chunk if layers is None else [torch.cat([a, b]) for a, b in zip(layers, chunk)]
    return layers


def dataset(labels: list[list], seed: int):
    """(image, token) indices and the three targets; background subsampled to the object tokens' number."""
    objects = [(i, t) for i, row in enumerate(labels) for t, label in enumerate(row) if isinstance(label, tuple)]
    background = [(i, t) for i, row in enumerate(labels) for t, label in enumerate(row) if label is None]
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(background), generator=generator)[:len(objects)].tolist()
    where = objects + [background[k] for k in keep]
    kinds = [labels[i][t] for i, t in where]
    colours, shapes = list(COLOURS), list(SHAPES)
    targets = {
        "colour": [colours.index(k[1]) if k else len(colours) for k in kinds],
        "shape": [shapes.index(k[0]) if k else len(shapes) for k in kinds],
        "kind": [KINDS.index(k) if k else len(KINDS) for k in kinds],
    }
    return where, {name: torch.tensor(values) for name, values in targets.items()}


def fit_probe(train_x, train_y, steps: int = 300):
    """A multinomial logistic regression (Adam, light weight decay) on standardised features, trained on
    object and background tokens; returns its label predictor."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    torch.manual_seed(0)
    linear = torch.nn.Linear(train_x.shape[1], int(train_y.max()) + 1)
    optimiser = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(linear((train_x - mean) / std), train_y).backward()
        optimiser.step()
    return lambda x: linear((x - mean) / std).argmax(-1).detach()


def recognition_from_tokens(predict, tokens: torch.Tensor, samples) -> float:
    """Suite v2 recognition answered by the kind probe alone: "yes" iff some token of the image is read as
    the asked kind. What a linear reader of these tokens could reach, with no language model."""
    with torch.no_grad():
        read = predict(tokens)  # (images, 64)
    said = [KINDS.index(asked_kind(s.question)) in set(row.tolist()) for s, row in zip(samples, read)]
    return sum(yes == (s.answer == "yes") for yes, s in zip(said, samples)) / len(samples)


LM_LAYERS = (0, 5, 10, 15, 20, 25, 30)  # hidden_states index: 0 = the language model's input, the projector's output


def language_features(adapter, samples) -> list[torch.Tensor]:
    """Per LM_LAYERS entry: (images, visual tokens, width), the language model's hidden states at the visual
    positions. They precede the question, so under causal attention no question changes them."""
    layers = None
    text = adapter.chat_text("Is there a red circle in the image? Answer yes or no.")
    for start in range(0, len(samples), 16):
        chunk = samples[start:start + 16]
        inputs = adapter.processor(images=[[s.image] for s in chunk], text=[text] * len(chunk), return_tensors="pt")
        with torch.no_grad():
            hidden = adapter.model(**inputs, output_hidden_states=True).hidden_states
        visual = inputs["input_ids"][0] == adapter.image_token_id
        chunk_layers = [hidden[k][:, visual].float() for k in LM_LAYERS]
        layers = chunk_layers if layers is None else [torch.cat([a, b]) for a, b in zip(layers, chunk_layers)]
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="scenes per split (train and test)")
    parser.add_argument("--task", default="objects", choices=("objects", "letters"),
                        help="objects: colour, shape and kind in v2 scenes; letters: which letter a token holds")
    parser.add_argument("--where", default="encoder", choices=("encoder", "language-model"),
                        help="encoder: every DINOv2 layer's tokens; language-model: the trained model's hidden "
                             "states at the visual positions, from the projector's output to the last layer")
    parser.add_argument("--model", default="nano", help="nano or nano:DIR (a training run), for --where language-model")
    parser.add_argument("--raw", action="store_true", help="also probe the encoder's tokens without the final LayerNorm")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per probe")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    from vfl.models import load

    adapter = load(args.model)
    tower, processor = adapter.model.model.vision_tower, adapter.processor
    started = time.perf_counter()
    if args.task == "letters":
        rows = letter_rows(tower, processor, args.images, args.steps)
        print(f"{args.images} images per split, 8 letters each; {time.perf_counter() - started:.0f} s")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"task": "letters", "images_per_split": args.images, "rows": rows},
                                           indent=2) + "\n")
        return
    splits = {}
    for split, seed in (("train", 0), ("test", 1)):
        samples = [make_question_sample(("count", "ground", "recog")[i % 3], i // 3, seed) for i in range(args.images)]
        splits[split] = (samples, [token_labels(s.scene) for s in samples])
    recog = [i for i, s in enumerate(splits["test"][0]) if s.function == "recog"]
    rows = []
    variants = ["language-model"] if args.where == "language-model" else ["layernorm"] + (["raw"] if args.raw else [])
    for variant in variants:
        per_split = {}
        for split, (samples, labels) in splits.items():
            where, targets = dataset(labels, seed=len(split))
            if variant == "language-model":
                layers = language_features(adapter, samples)
            else:
                layers = features(tower, processor, [s.image for s in samples], raw=variant == "raw")
            index_image, index_token = torch.tensor([w[0] for w in where]), torch.tensor([w[1] for w in where])
            per_split[split] = ([layer[index_image, index_token] for layer in layers], targets)
            if split == "test":
                recog_tokens = [layer[recog] for layer in layers]
        (train_layers, train_targets), (test_layers, test_targets) = per_split["train"], per_split["test"]
        test_objects = test_targets["kind"] < len(KINDS)
        if variant == "language-model":
            probes = {"LM input (projector output)": [0]} | {f"LM layer {k}": [i] for i, k in enumerate(LM_LAYERS) if k}
        else:
            probes = ({"pixels": [0]} if variant == "layernorm" else {}) | \
                {f"layer {k}": [k + 1] for k in range(len(train_layers) - 1)} | {"layers 6+9+12 (nano)": [7, 10, 13]}
        for name, chosen in probes.items():
            row = {"tokens": variant, "layers": name}
            train_x = torch.cat([train_layers[k] for k in chosen], dim=-1)
            test_x = torch.cat([test_layers[k] for k in chosen], dim=-1)
            for target in ("colour", "shape", "kind"):
                predict = fit_probe(train_x, train_targets[target], args.steps)
                with torch.no_grad():
                    row[target] = round((predict(test_x) == test_targets[target])[test_objects].float().mean().item(), 3)
            row["recog"] = round(recognition_from_tokens(
                predict, torch.cat([recog_tokens[k] for k in chosen], dim=-1), [splits["test"][0][i] for i in recog]), 3)
            rows.append(row)
            print(f"{row['tokens']:9s} {name:27s} colour {row['colour']:.3f}  shape {row['shape']:.3f}  "
                  f"kind {row['kind']:.3f}  recognition from tokens {row['recog']:.3f}", flush=True)
    tokens = {split: len(per_split[split][1]["kind"]) for split in per_split}
    print(f"tokens probed: train {tokens['train']}, test {tokens['test']} (half objects, half background; scored on "
          f"the objects); recognition from tokens on {len(recog)} test scenes; {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "images_per_split": args.images, "tokens": tokens,
                                        "recog_scenes": len(recog), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
