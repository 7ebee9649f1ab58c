"""Accuracy of a model on image-question-answer sets: `vfl eval` (a user's JSONL) and `vfl nano eval`.

A JSONL evaluation record: ``{"image": "img/1.png", "question": "...", "answer": "...", "function": "count"}``
(image path relative to the file). ``metric`` scores it another way than its function's own, and may stand for
it: ``number`` (count), ``yes-no`` (recog; POPE's precision, recall, F1 and yes ratio are reported too),
``box-iou`` (ground; needs ``box`` in pixels), ``exact`` (ocr: normalised text), and the benchmarks' own
``choice`` (recog: an option letter; ``choices`` lists the options' texts), ``vqa-soft`` (ocr: TextVQA's soft
accuracy against ``accepted``, every annotator's answer) and ``contains`` (ocr: OCRBench's containment of one of
``accepted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from vfl.errors import VflError
from vfl.images import read_image
from vfl.jsonl import json_objects
from vfl.interventions import greedy_decode, prefill
from vfl.decision import accuracy
from vfl.metrics import SCORER_OF
from vfl.models import Adapter
from vfl.probes.schema import FUNCTIONS, check_fields, check_string_lists, parse_function

METRICS = {"number": "count", "yes-no": "recog", "box-iou": "ground", "exact": "ocr", "choice": "recog",
           "vqa-soft": "ocr", "contains": "ocr"}  # each metric's function, where a record names no function


@dataclass
class Item:
    id: str
    function: str
    image: Image.Image
    question: str
    answer: str
    box: list[float] | None = None
    metric: str | None = None
    accepted: list[str] | None = None
    choices: list[str] | None = None


ITEM_TYPES = {"image": ((str,), "a non-empty string"), "question": ((str,), "a non-empty string"),
              "answer": ((str, int, float), "a string or a number")}


def load_items(path: Path) -> list[Item]:
    path = Path(path)
    items = []
    for lineno, record in json_objects(path, "evaluation file"):
        missing = [k for k in ("image", "question", "answer") if k not in record]
        if missing or not ("function" in record or "metric" in record):
            raise VflError(f"{path}:{lineno} needs image, question, answer and function (or metric)")
        check_fields(record, ITEM_TYPES, f"{path}:{lineno}", ("box",))
        if "metric" in record and record["metric"] not in METRICS:
            raise VflError(f"{path}:{lineno}: unknown metric {record['metric']!r}; choose from {', '.join(METRICS)}")
        function = parse_function(record["function"]) if "function" in record else METRICS[record["metric"]]
        check_string_lists(record, ("accepted", "choices"), f"{path}:{lineno}")
        image_path = Path(record["image"]) if Path(record["image"]).is_absolute() else path.parent / record["image"]
        image = read_image(image_path, f"{path}:{lineno}")
        metric = record.get("metric") or SCORER_OF[function]
        if metric == "box-iou" and not record.get("box"):
            raise VflError(f"{path}:{lineno}: a box-iou record needs its box")
        items.append(Item(str(record.get("id", lineno)), function, image, record["question"], str(record["answer"]),
                          record.get("box"), metric, record.get("accepted"), record.get("choices")))
    if not items:
        raise VflError(f"evaluation file {path} holds no records")
    return items


def answer(adapter: Adapter, image: Image.Image, question: str, max_new_tokens: int = 32) -> str:
    """The model's greedy answer (the same prefix + decode path as the swap engine, one row)."""
    prompt = adapter.build_prompt(image, question)
    tokens = greedy_decode(adapter, prefill(adapter, prompt), prompt, 1, max_new_tokens).tokens[0]
    return adapter.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise VflError(f"--batch-size must be at least 1, got {batch_size}")


def answers(adapter: Adapter, images: list[Image.Image], questions: list[str], max_new_tokens: int = 32,
            batch_size: int = 1) -> list[str]:
    """Greedy answers. ``batch_size`` 1: the swap engine's own path, one item at a time. Larger: the model's
    `generate` over left-padded batches, the same answers up to float rounding and many times faster on a
    GPU, which one row per forward leaves idle."""
    check_batch_size(batch_size)
    if batch_size == 1:
        return [answer(adapter, image, question, max_new_tokens) for image, question in zip(images, questions)]
    said = []
    tokenizer, side = adapter.tokenizer, adapter.tokenizer.padding_side
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(adapter.eos_token_ids, default=0)
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(images), batch_size):
            texts = [adapter.chat_text(q) for q in questions[start:start + batch_size]]
            nested = [[image] for image in images[start:start + batch_size]]  # one image per prompt (Gemma 3 asks)
            inputs = adapter.processor(images=nested, text=texts, padding=True, return_tensors="pt").to(adapter.device)
            for key, value in inputs.items():
                if torch.is_tensor(value) and value.is_floating_point():
                    inputs[key] = value.to(adapter.model.dtype)
            with torch.inference_mode():
                out = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                             eos_token_id=sorted(adapter.eos_token_ids) or None, pad_token_id=pad)
            said += [t.strip() for t in tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                               skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return said


def evaluate(adapter: Adapter, items: list[Item], max_new_tokens: int = 32, batch_size: int = 1) -> tuple[dict, list[dict]]:
    """Per-function accuracy (with 95% Wilson intervals) and one record per item; ``batch_size`` as in
    `answers`."""
    said = []
    with tqdm(total=len(items), desc="eval", unit="item", dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            said += answers(adapter, [i.image for i in chunk], [i.question for i in chunk], max_new_tokens, batch_size)
            bar.update(len(chunk))
    records = []
    for item, text in zip(items, said):
        scorer = item.metric or SCORER_OF[item.function]
        given = adapter.credit(text, item.image.size, scorer, item.answer, item.box, accepted=item.accepted,
                               choices=item.choices)
        records.append({"id": item.id, "function": item.function, "scorer": scorer, "question": item.question,
                        "answer": text, "target": item.answer, "credit": given, "correct": given >= 0.5})
    return summarise(records), records


def summarise(records: list[dict]) -> dict:
    """Per function: `vfl.decision.accuracy` of its records."""
    return {function: accuracy(mine) for function in FUNCTIONS
            if (mine := [r for r in records if r["function"] == function])}


def table(summary: dict) -> str:
    lines = ["| function | n | accuracy | 95% CI |", "|---|---|---|---|"]
    for function, row in summary.items():
        ci = f"{row['ci'][0]:.3f}-{row['ci'][1]:.3f}" if row["ci"] else "soft scores"
        lines.append(f"| {function} | {row['n']} | {row['accuracy']:.3f} | {ci} |")
    for function, row in summary.items():
        if "yes_no" in row:
            stats = row["yes_no"]
            lines.append(f"\n{function}, yes/no as POPE scores it: F1 {stats['f1']:.3f}, precision "
                         f"{stats['precision']:.3f}, recall {stats['recall']:.3f}, yes ratio {stats['yes_ratio']:.3f}")
    return "\n".join(lines)
