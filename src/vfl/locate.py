"""The two analyses over probes: Visual Token Swapping per layer (`locate`) and vision token dropping
from the last N layers (`drop`). Both write resumable JSONL records and a JSON summary."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vfl import report, runner
from vfl.errors import VflError
from vfl.interventions import check_layers, check_pair, controls, drop_sweep, last_layers, layer_windows, swap_sweep
from vfl.metrics import matches
from vfl.models import Adapter
from vfl.probes.schema import Probe


def _size_mismatch(probe: Probe, size_a, size_b) -> VflError:
    return VflError(f"probe {probe.id}: images A {size_a} and B {size_b} differ in size, so their visual tokens "
                    "cannot be exchanged; pass --resize to resize B to A's size")


def load_pair(probe: Probe, resize: bool) -> tuple[Image.Image, Image.Image, list | None]:
    """Both images of a probe (B resized to A's size with ``resize``) and B's box in B's final pixels."""
    image_a, image_b = probe.image("a"), probe.image("b")
    box_b = probe.box_b
    if image_a.size != image_b.size:
        if not resize:
            raise _size_mismatch(probe, image_a.size, image_b.size)
        if box_b is not None:
            sx, sy = image_a.width / image_b.width, image_a.height / image_b.height
            box_b = [box_b[0] * sx, box_b[1] * sy, box_b[2] * sx, box_b[3] * sy]
        image_b = image_b.resize(image_a.size, Image.BICUBIC)
    return image_a, image_b, box_b


def check_probe_images(probes: list[Probe], resize: bool) -> None:
    """Read every image header before any work, so bad input fails before anything is written."""
    for probe in probes:
        size_a, size_b = probe.size("a"), probe.size("b")
        if size_a != size_b and not resize:
            raise _size_mismatch(probe, size_a, size_b)


def locate(adapter: Adapter, probes: list[Probe], out: Path, settings: dict, window: int = 1,
           layers: list[int] | None = None, max_new_tokens: int = 32, batch_size: int | None = None,
           resize: bool = False) -> dict | None:
    """Swap sweep over every layer window (or the windows starting at ``layers``) for every probe;
    returns the summary (rank 0) or None."""
    out = Path(out)
    windows = layer_windows(adapter.num_layers, window)
    if layers is not None:
        check_layers(layers, adapter.num_layers - window + 1)
        windows = [w for w in windows if w.layers[0] in layers]
    check_probe_images(probes, resize)
    interventions = controls(adapter.num_layers) + windows
    runner.check_settings(out, settings)
    decode = adapter.tokenizer.decode

    def work(probe: Probe, missing: list[str]):
        image_a, image_b, box_b = load_pair(probe, resize)
        prompt_a, prompt_b = adapter.build_prompt(image_a, probe.question), adapter.build_prompt(image_b, probe.question)
        check_pair(probe.id, prompt_a, prompt_b)
        # The controls come first in every batch: their answers define `changed` for every other row.
        chosen = interventions[:2] + [i for i in interventions[2:] if i.name in missing]
        answers = [decode(t, skip_special_tokens=True).strip()
                   for t in swap_sweep(adapter, prompt_a, prompt_b, chosen, max_new_tokens, batch_size)]
        answer_a, answer_b = answers[0], answers[1]
        for intervention, answer in zip(chosen, answers):
            if intervention.name not in missing:
                continue
            yield {
                "id": probe.id, "function": probe.function, "intervention": intervention.name,
                "layer": intervention.layers[0] if intervention.name.startswith("layer") else None,
                "layers": list(intervention.layers), "answer": answer, "answer_a": answer_a, "answer_b": answer_b,
                "target_a": probe.answer_a, "target_b": probe.answer_b,
                "changed": answer != answer_a,
                "transferred": matches(probe.function, answer, probe.answer_b, box_b, other=probe.answer_a,
                                       box_format=adapter.box_format, image_size=image_a.size),
                "correct_a": matches(probe.function, answer_a, probe.answer_a, probe.box_a, other=probe.answer_b,
                                     box_format=adapter.box_format, image_size=image_a.size),
            }

    records = runner.run(out, "results.jsonl", probes, lambda p: p.id, [i.name for i in interventions], work, "locate")
    if records is None:
        return None
    summary = report.locate_summary(records, settings["model"], adapter.num_layers, window)
    report.write_locate(summary, out)
    return summary


def drop(adapter: Adapter, probes: list[Probe], out: Path, settings: dict, max_new_tokens: int = 32,
         batch_size: int | None = None) -> dict | None:
    """Accuracy with the visual KV dropped from the last N layers, N = 0..L, on both images of every probe."""
    out = Path(out)
    check_probe_images(probes, resize=True)
    interventions = last_layers(adapter.num_layers)
    runner.check_settings(out, settings)
    items = [(probe, which) for probe in probes for which in "ab"]
    decode = adapter.tokenizer.decode

    def work(item, missing: list[str]):
        probe, which = item
        image = probe.image(which)
        target, other = (probe.answer_a, probe.answer_b) if which == "a" else (probe.answer_b, probe.answer_a)
        box = probe.box_a if which == "a" else probe.box_b
        prompt = adapter.build_prompt(image, probe.question)
        chosen = [i for i in interventions if i.name in missing]
        for intervention, tokens in zip(chosen, drop_sweep(adapter, prompt, chosen, max_new_tokens, batch_size)):
            answer = decode(tokens, skip_special_tokens=True).strip()
            yield {"id": f"{probe.id}/{which}", "function": probe.function, "intervention": intervention.name,
                   "dropped": len(intervention.layers), "layers": list(intervention.layers), "answer": answer,
                   "target": target, "correct": matches(probe.function, answer, target, box, other=other,
                                                        box_format=adapter.box_format, image_size=image.size)}

    records = runner.run(out, "drop.jsonl", items, lambda it: f"{it[0].id}/{it[1]}", [i.name for i in interventions],
                         work, "drop")
    if records is None:
        return None
    summary = report.drop_summary(records, settings["model"], adapter.num_layers)
    report.write_drop(summary, out)
    return summary
