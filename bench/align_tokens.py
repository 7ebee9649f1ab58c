"""Benchmark: do a trained nano's image tokens say the words of the objects they show?

For a run trained with ``--align-words`` (`vfl.nano.align`): on held-out suite v2 recognition images (seed 1),
every token that holds an object (`cell_kinds`) is compared with the 28 kinds' word vectors. Reported: the mean
cosine to its own kind's vector, the share of tokens whose nearest vector (by cosine) is their kind, their
colour, their shape, and the tokens' norm against the words'. A token that names its kind this way is one the
language model can find as it finds the words " red circle".

  python bench/align_tokens.py --weights runs/align-recog/weights --out runs/align-recog/align_tokens.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vfl.nano.align import KINDS, NO_KIND, cell_kinds, word_vectors
from vfl.nano.model import IMAGE_SIZE, load_nano
from vfl.nano.suite import make_question_sample
from vfl.nano.train import encoded
from vfl.probes.render import COLOURS, SHAPES


@torch.inference_mode()
def token_scores(model, processor, n: int, seed: int) -> dict:
    layers = model.config.vision_feature_layer
    layers = layers if isinstance(layers, list) else [layers]
    vectors = word_vectors(processor.tokenizer, model.model.language_model.embed_tokens)
    samples = [make_question_sample("recog", i, seed, split="held_out") for i in range(n)]
    tokens, kinds = [], []
    for i in range(0, n, 25):
        chunk = samples[i:i + 25]
        pixels = processor.image_processor([s.image for s in chunk], return_tensors="pt")["pixel_values"]
        image = model.model.multi_modal_projector(encoded(model, pixels, layers))
        cell = IMAGE_SIZE // round(image.shape[1] ** 0.5)
        for row, sample in zip(image, chunk):
            k = torch.tensor(cell_kinds(sample.scene, IMAGE_SIZE, cell))
            tokens.append(row[k != NO_KIND])
            kinds.append(k[k != NO_KIND])
    tokens, kinds = torch.cat(tokens).float(), torch.cat(kinds)
    cosine = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(vectors, dim=-1).T
    nearest = cosine.argmax(-1)
    shape_of = torch.tensor([SHAPES.index(s) for s, _ in KINDS])
    colour_of = torch.tensor([list(COLOURS).index(c) for _, c in KINDS])
    return {"tokens": len(kinds),
            "cosine_to_own": round(cosine[torch.arange(len(kinds)), kinds].mean().item(), 3),
            "nearest_is_kind": round((nearest == kinds).float().mean().item(), 3),
            "nearest_has_colour": round((colour_of[nearest] == colour_of[kinds]).float().mean().item(), 3),
            "nearest_has_shape": round((shape_of[nearest] == shape_of[kinds]).float().mean().item(), 3),
            "token_norm": round(tokens.norm(dim=-1).mean().item(), 3),
            "word_vector_norm": round(vectors.norm(dim=-1).mean().item(), 3),
            "chance_kind": round(1 / len(KINDS), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="a `vfl nano train` run's weights folder")
    parser.add_argument("--n", type=int, default=100, help="held-out recognition images")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model, processor = load_nano(args.weights)
    result = {"weights": str(args.weights), "n": args.n, "seed": args.seed,
              **token_scores(model, processor, args.n, args.seed)}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
