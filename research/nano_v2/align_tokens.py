"""Benchmark: do a trained nano's image tokens say the words of the objects they show?

For a run trained with ``--align-words`` (`vfl.nano.align`): on held-out suite v2 recognition images (seed 1),
every token that holds an object (`cell_kinds`) is compared with the 28 kinds' word vectors. Reported: the mean
cosine to its own kind's vector, the share of tokens whose nearest vector (by cosine) is their kind, their
colour, their shape, and the tokens' norm against the words'. A token that names its kind this way is one the
language model can find as it finds the words " red circle".

``--letters`` scores a run trained with ``--align-letters`` instead: on held-out pseudo-word OCR images (seed 1;
random letters, so no word list helps), every token that holds a letter is compared with all targets' vectors
(the 28 kinds, then the 104 letter-and-ink `GLYPHS`): the share whose nearest vector is its glyph, its letter,
its ink. With ``--fit``, ``--letters`` fits the projector to OCR images' letters instead (half of them pseudo-words).

``--fit STEPS`` asks what the alignment loss itself can reach, without the language model: a fresh projector
(nano's untrained one, reading encoder layers ``--vision-layers``, 6/9/12) is trained on it alone over the frozen
encoder's features of ``--train-images`` suite v2 recognition, counting and grounding scenes (seed 0), Adam at
``--lr``, 32 images a step, once per ``--temperatures`` entry ("none": direction and norm only), and scored as
above at steps 50 to STEPS on the held-out recognition images. Each arm starts from the same projector and sees
the same batches.
``--shuffle 1`` fits tokens of 14 px (256 an image, no 2x2 shuffle) instead of nano's 28 px.

  python research/nano_v2/align_tokens.py --weights runs/align-recog/weights --out runs/align-recog/align_tokens.json
  python research/nano_v2/align_tokens.py --weights runs/ocr-align-letters/letters/weights --letters
  python research/nano_v2/align_tokens.py --fit 1000 --temperatures none,0.05 --out research/nano_v2/results/align_fit_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from vfl.nano.align import GLYPHS, KINDS, NO_KIND, alignment_loss, cell_kinds, word_vectors
from vfl.nano.config import IMAGE_SIZE, NanoSpec
from vfl.nano.model import build_untrained, load_nano
from vfl.nano.suite_v2 import make_question_sample
from vfl.nano.batches import vision_features
from vfl.probes.questions import INKS
from vfl.probes.render import COLOURS, SHAPES

# Per target row (the kinds, then with letters the glyphs): its attribute's index, -1 where a row has none.
SHAPE_OF = torch.tensor([SHAPES.index(s) for s, _ in KINDS])
COLOUR_OF = torch.tensor([list(COLOURS).index(c) for _, c in KINDS])
LETTER_OF = torch.tensor([-1] * len(KINDS) + [ord(letter) - ord("a") for letter, _ in GLYPHS])
INK_OF = torch.tensor([-1] * len(KINDS) + [list(INKS).index(ink) for _, ink in GLYPHS])


def features(model, processor, samples, layers: list[int], letters: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen encoder's features (images, tokens, width; float32) of the samples' images, and each token's
    target (`cell_kinds`)."""
    image = vision_features(model, processor, [s.image for s in samples], layers, batch=25, dtype=torch.float32)
    cell = IMAGE_SIZE // round(image.shape[1] ** 0.5)
    return image, torch.stack([torch.tensor(cell_kinds(s.scene, IMAGE_SIZE, cell, letters)) for s in samples])


@torch.inference_mode()
def nearest_scores(tokens: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor, what: str,
                   attributes: dict[str, torch.Tensor], rows: slice) -> dict:
    """How the tokens with a target (projector outputs) stand to the targets' word vectors: cosine to their own,
    the share whose nearest vector is their own (``nearest_is_<what>``) and shares each of ``attributes``;
    ``rows``: the vectors of this kind of target (norm and chance)."""
    chosen = targets != NO_KIND
    tokens, targets = tokens[chosen].float(), targets[chosen]
    cosine = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(vectors, dim=-1).T
    nearest = cosine.argmax(-1)
    return {"tokens": len(targets),
            "cosine_to_own": round(cosine[torch.arange(len(targets)), targets].mean().item(), 3),
            f"nearest_is_{what}": round((nearest == targets).float().mean().item(), 3),
            **{f"nearest_has_{name}": round((of[nearest] == of[targets]).float().mean().item(), 3)
               for name, of in attributes.items()},
            "token_norm": round(tokens.norm(dim=-1).mean().item(), 3),
            "word_vector_norm": round(vectors[rows].norm(dim=-1).mean().item(), 3),
            f"chance_{what}": round(1 / len(vectors[rows]), 3)}


def target_scores(tokens: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor, letters: bool = False) -> dict:
    """How the object tokens stand to the kinds' word vectors, or (``letters``) the letter tokens to the glyphs'."""
    if letters:
        return nearest_scores(tokens, targets, vectors, "glyph", {"letter": LETTER_OF, "ink": INK_OF},
                              slice(len(KINDS), None))
    return nearest_scores(tokens, targets, vectors, "kind", {"colour": COLOUR_OF, "shape": SHAPE_OF},
                          slice(len(KINDS)))


def held_out(n: int, seed: int, letters: bool = False) -> list:
    if letters:
        return [make_question_sample("ocr", i, seed, split="pseudo") for i in range(n)]
    return [make_question_sample("recog", i, seed, split="held_out") for i in range(n)]


def training_images(n: int, letters: bool = False) -> list:
    """``--fit``'s images (seed 0): OCR, half of them pseudo-words (``letters``), else recognition, counting and
    grounding scenes."""
    if letters:
        return [make_question_sample("ocr", i, 0, split=("train", "pseudo")[i % 2]) for i in range(n)]
    return [make_question_sample(f, i, 0) for i in range(n // 3) for f in ("recog", "count", "ground")]


def token_scores(model, processor, n: int, seed: int, letters: bool = False) -> dict:
    layers = model.config.vision_feature_layer
    layers = layers if isinstance(layers, list) else [layers]
    image, targets = features(model, processor, held_out(n, seed, letters), layers, letters)
    with torch.inference_mode():
        tokens = model.model.multi_modal_projector(image)
    return target_scores(tokens, targets, word_vectors(processor.tokenizer, model.model.language_model.embed_tokens,
                                                       letters), letters)


def fit(args) -> dict:
    """Train a fresh projector on the alignment loss alone, once per temperature, from the same start."""
    layers = args.vision_layers
    model, processor = build_untrained(NanoSpec(vision_layers=layers, lora_rank=0, shuffle=args.shuffle), seed=0)
    vectors = word_vectors(processor.tokenizer, model.model.language_model.embed_tokens, args.letters)
    started = time.time()
    scenes = training_images(args.train_images, args.letters)
    train_image, train_kinds = features(model, processor, scenes, layers, args.letters)
    test_image, test_kinds = features(model, processor, held_out(args.n, args.seed, args.letters), layers, args.letters)
    print(f"features of {len(scenes)} + {args.n} images in {time.time() - started:.0f} s", flush=True)
    checkpoints = sorted({s for s in (50, 100, 200, 300, 500, 1000, 2000) if s < args.fit} | {args.fit})
    arms = []
    for name in args.temperatures.split(","):
        temperature = None if name == "none" else float(name)
        projector = copy.deepcopy(model.model.multi_modal_projector)
        optimizer = torch.optim.AdamW(projector.parameters(), lr=args.lr, weight_decay=0.0)
        batches = torch.Generator().manual_seed(0)
        rows, started = [], time.time()
        for step in range(1, args.fit + 1):
            picked = torch.randint(0, len(train_image), (32,), generator=batches)
            loss = alignment_loss(projector(train_image[picked]), train_kinds[picked], vectors, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
            optimizer.step()
            if step in checkpoints:
                with torch.inference_mode():
                    scores = target_scores(projector(test_image), test_kinds, vectors, args.letters)
                rows.append({"step": step, "loss": round(loss.item(), 4), **scores})
                print(name, rows[-1], f"{time.time() - started:.0f} s", flush=True)
        arms.append({"temperature": name, "seconds": round(time.time() - started), "curve": rows})
    return {"fit_steps": args.fit, "lr": args.lr, "train_images": len(scenes), "n": args.n, "seed": args.seed,
            "letters": args.letters, "shuffle": args.shuffle,
            "token_px": IMAGE_SIZE // round(train_image.shape[1] ** 0.5),
            "encoder_layers": layers, "arms": arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a `vfl nano train` run's weights folder")
    parser.add_argument("--n", type=int, default=100, help="held-out recognition (or OCR) images")
    parser.add_argument("--letters", action="store_true",
                        help="letter tokens of OCR images instead of object tokens (a run trained --align-letters)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fit", type=int, default=0, help="instead: steps of projector-only alignment")
    parser.add_argument("--temperatures", default="none,0.05", help="of --fit's contrast; none: without it")
    parser.add_argument("--train-images", type=int, default=900, help="of --fit")
    parser.add_argument("--lr", type=float, default=1e-3, help="of --fit")
    parser.add_argument("--vision-layers", type=lambda text: [int(k) for k in text.split(",")], default=[6, 9, 12],
                        help="of --fit: the encoder layers the projector reads")
    parser.add_argument("--shuffle", type=int, default=2, choices=(1, 2),
                        help="of --fit: the pixel shuffle (2: nano's 28 px tokens, 1: 14 px tokens)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if bool(args.fit) == bool(args.weights):
        parser.error("pass --weights (score a run) or --fit STEPS (fit a projector), one of them")
    if args.fit:
        result = fit(args)
    else:
        model, processor = load_nano(args.weights)
        result = {"weights": str(args.weights), "n": args.n, "seed": args.seed, "letters": args.letters,
                  **token_scores(model, processor, args.n, args.seed, args.letters)}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
