"""nano's training batches: samples as token ids and pixels (or cached encoder features), padded together.

Two data paths. ``cached``: a fixed set of images per function whose frozen-encoder features are computed once and
cached in the run folder. ``stream``: every step draws fresh samples, rendered by DataLoader workers from (seed,
sample index) alone, so a resumed run sees exactly the samples it would have seen; with each image token's
target for word alignment.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from vfl.errors import VflError
from vfl.nano.align import cell_kinds
from vfl.nano.config import IMAGE_SIZE, TrainConfig
from vfl.nano.data import sample_maker
from vfl.nano.sample import FUNCTIONS, TRAINING_FUNCTIONS
from vfl.nano.suite_v2 import loose_recognition, ocr_split
from vfl.training import torch_save_atomically


def spelled(tokenizer, text: str) -> list[int]:
    """``text`` as one single-character token per character: "bear" as b, e, a, r rather than the one token
    "bear". A word read letter by letter is built from 26 tokens that every training word exercises, so a
    held-out word needs no output token that OCR training never produced; it decodes to the same string."""
    ids = tokenizer.convert_tokens_to_ids(list(text))
    if None in ids or tokenizer.decode(ids) != text:
        raise VflError(f"{text!r} has characters without a token of their own; only plain letters can be spelled")
    return ids


def answer_ids(tokenizer, answer: str, spell: bool = False) -> list[int]:
    """The tokens a training sample's answer is scored on: the answer (``spell``: letter by letter), then
    <|im_end|>."""
    if spell:
        return spelled(tokenizer, answer) + tokenizer("<|im_end|>", add_special_tokens=False).input_ids
    return tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids


def token_ids(processor, question: str, answer: str, image_tokens: int,
              spell: bool = False) -> tuple[list[int], list[int]]:
    """The prompt exactly as the processor lays it out at inference, then the answer (``spell``: letter by
    letter) and <|im_end|>."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = prompt.replace("<image>", "<image>" * image_tokens)
    tokenizer = processor.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer = answer_ids(tokenizer, answer, spell)
    return prompt_ids + answer, [-100] * len(prompt_ids) + answer


@torch.inference_mode()
def vision_features(model, processor, images, layers: list[int], batch: int = 32,
                    dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Pre-projector features of the configured encoder layer(s), (N, tokens, width); float16 halves a
    cached training set's memory."""
    chunks = []
    for i in tqdm(range(0, len(images), batch), desc="vision features", unit="batch"):
        pixels = processor.image_processor(images[i:i + batch], return_tensors="pt")["pixel_values"]
        chunks.append(encoded(model, pixels, layers).to(dtype))
    return torch.cat(chunks)


def training_sample(make, function: str, index: int, seed: int, pseudo_words: float = 0.0,
                    loose: float = 0.0):
    """Training sample ``index`` of ``function``; a ``pseudo_words`` share of OCR samples shows random strings,
    a ``loose`` share of recognition samples no binding distractors."""
    if function == "ocr" and pseudo_words:
        return make(function, index, seed, split=ocr_split(index, seed, pseudo_words))
    if function == "recog" and loose_recognition(index, seed, loose):
        return make(function, index, seed, binding=False)
    return make(function, index, seed)


def training_set(model, processor, per_function: int, seed: int, layers: list[int], suite: str = "v1",
                 functions=FUNCTIONS, ocr_answers: str = "tokens", pseudo_words: float = 0.0,
                 loose: float = 0.0) -> dict:
    """Token ids, labels and the encoder layers' concatenated features of the training samples, ``per_function``
    of each of ``functions`` in turn."""
    make = sample_maker(suite)
    samples = [training_sample(make, f, i, seed, pseudo_words, loose) for f in functions for i in range(per_function)]
    features = vision_features(model, processor, [s.image for s in samples], layers)
    tokens = [token_ids(processor, s.question, s.answer, features.shape[1], spells(s.function, ocr_answers))
              for s in samples]
    return {"ids": [t[0] for t in tokens], "labels": [t[1] for t in tokens], "features": features}


def spells(function: str, ocr_answers: str) -> bool:
    """Whether a sample of ``function`` is trained on its answer spelled letter by letter."""
    return function == "ocr" and ocr_answers == "letters"


def cached(path: Path, build) -> dict:
    """``torch.load(path)``, or ``build()`` saved there atomically first."""
    if path.exists():
        return torch.load(path)
    data = build()
    torch_save_atomically(data, path)
    return data


def padded(ids: list[list[int]], labels: list[list[int]], pad_id: int):
    """Right-padded token ids, labels (-100) and attention mask."""
    width = max(len(x) for x in ids)
    tensor = torch.full((len(ids), width), pad_id, dtype=torch.long)
    label_tensor = torch.full((len(ids), width), -100, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (x, y) in enumerate(zip(ids, labels)):
        tensor[row, : len(x)], label_tensor[row, : len(y)], attention[row, : len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return tensor, label_tensor, attention


def batch_of(data, order: list[int], pad_id: int, functions=FUNCTIONS):
    """The samples ``order`` of a cached training set, with each one's index in `TRAINING_FUNCTIONS`."""
    ids, labels, attention = padded([data["ids"][i] for i in order], [data["labels"][i] for i in order], pad_id)
    kinds = [TRAINING_FUNCTIONS.index(functions[i // data["per_function"]]) for i in order]
    return ids, labels, attention, data["features"][order], kinds


def stream_slot(functions: list[str], index: int) -> tuple[str, int]:
    """(function, its own sample index) of sample ``index`` of a stream that trains ``functions`` in turn: a
    function named k times takes k slots of each turn and draws its samples 0, 1, 2, ... across them."""
    turn, slot = divmod(index, len(functions))
    function = functions[slot]
    return function, turn * functions.count(function) + functions[:slot].count(function)


class StreamSamples(torch.utils.data.Dataset):
    """Sample i of the endless training stream: the function of slot ``i % len(functions)`` (`stream_slot`),
    drawn by the suite's sample maker from (seed, i) alone, as pixel values and token ids; the same i always gives
    the same sample, in any worker; with each image token's target for word alignment (`vfl.nano.align.cell_kinds`;
    suite v1's OCR words are targets too), for the ``aligned`` functions' samples only where given."""

    def __init__(self, processor, seed: int, image_tokens: int, suite: str = "v1", functions=FUNCTIONS,
                 ocr_answers: str = "tokens", pseudo_words: float = 0.0, loose: float = 0.0, letters: bool = False,
                 aligned=None):
        self.processor, self.seed, self.image_tokens = processor, seed, image_tokens
        self.make, self.functions, self.ocr_answers = sample_maker(suite), list(functions), ocr_answers
        self.pseudo_words, self.loose, self.letters, self.words = pseudo_words, loose, letters, suite == "v1"
        self.aligned = None if aligned is None else set(aligned)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, index: int):
        function, own = stream_slot(self.functions, index)
        sample = training_sample(self.make, function, own, self.seed, self.pseudo_words, self.loose)
        pixels = self.processor.image_processor([sample.image], return_tensors="pt")["pixel_values"][0]
        ids, labels = token_ids(self.processor, sample.question, sample.answer, self.image_tokens,
                                spells(function, self.ocr_answers))
        scene = sample.scene if self.aligned is None or function in self.aligned else None
        kinds = cell_kinds(scene, IMAGE_SIZE, IMAGE_SIZE // round(self.image_tokens ** 0.5), self.letters, self.words)
        return pixels, ids, labels, TRAINING_FUNCTIONS.index(function), torch.tensor(kinds)


def collate(items, pad_id: int):
    pixels, ids, labels, functions, kinds = zip(*items)
    return (*padded(list(ids), list(labels), pad_id), torch.stack(pixels), list(functions), torch.stack(kinds))


def stream_batches(processor, config: TrainConfig, image_tokens: int, start: int, pad_id: int):
    """Steps ``start``..``config.steps - 1`` of the stream: step t holds samples t*B .. t*B + B - 1, rendered by
    ``config.workers`` DataLoader workers (so a resumed run sees exactly the samples it would have seen)."""
    steps = [list(range(t * config.batch_size, (t + 1) * config.batch_size)) for t in range(start, config.steps)]
    samples = StreamSamples(processor, config.seed, image_tokens, config.suite, config.functions, config.ocr_answers,
                            config.pseudo_words, config.loose_recognition, config.align_letters, config.align_functions)
    return torch.utils.data.DataLoader(samples,
                                       batch_sampler=steps, num_workers=config.workers,
                                       collate_fn=partial(collate, pad_id=pad_id),
                                       pin_memory=config.device.startswith("cuda"))


def encoded(model, pixels: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """The frozen encoder's features of the configured layers, on the model's device."""
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels).hidden_states
        return torch.cat([hidden[k] for k in layers], dim=-1)
