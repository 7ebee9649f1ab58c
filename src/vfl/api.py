"""The front door for notebooks and the CLI: `locate` (Visual Token Swapping per layer window) and `drop`
(vision token dropping from the last N layers) on a loaded model, returning result objects.

    import vfl
    probes = vfl.make_probes(["count", "ocr"], n=20)
    result = vfl.locate(model, processor, probes, window=1)
    result.vfl, result.classes, result.records  # {function: layers}, {function: class}, a DataFrame
    result.plot()

With ``out=`` a call is the resumable run the CLI does: the folder is locked, its settings recorded, and a
rerun continues from the records on disk.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vfl import decision, plots, report, runner
from vfl.errors import VflError
from vfl.interventions import (Intervention, check_layers, check_pair, controls, custom_interventions, drop_sweep,
                               last_layers, narrowed,
                               prefill_pair, swap_answers, swap_sweep, sweep_interventions)
from vfl.models import Adapter, adapter_for
from vfl.probes.schema import Probe, check_probe_images, load_pair, load_probes


# -- inputs ------------------------------------------------------------------------------------------
def make_probes(functions=("recog", "count", "ground", "ocr"), n: int = 20, size: int = 224, seed: int = 0,
                out: str | Path | None = None, suite: str = "v1") -> list[Probe]:
    """Built-in probe pairs (images written under ``out``, or a temporary folder) of suite v1 (only the
    asked-about objects) or v2 (question-dependent scenes: distractors, binding, one of two words)."""
    from vfl.probes.generate import check_probe_options, make_probe_set
    from vfl.probes.schema import parse_functions

    functions = parse_functions(functions if isinstance(functions, str) else ",".join(functions))
    check_probe_options(n, size, suite)  # before a temporary folder is made
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="vfl-probes-"))
    return load_probes(make_probe_set(functions, n, size, seed, folder, suite))


def as_adapter(model, processor=None) -> Adapter:
    """An `Adapter` from an adapter, a loaded transformers model and its processor, or a model spec string."""
    if isinstance(model, Adapter):
        return model
    if isinstance(model, (str, Path)):
        from vfl.models import load

        return load(str(model))
    if processor is None:
        raise VflError("pass the model's processor too: vfl.locate(model, processor, probes)")
    return adapter_for(model, processor)


def as_probes(probes) -> list[Probe]:
    if isinstance(probes, (str, Path)):
        return load_probes(probes)
    probes = list(probes or [])
    if not probes or not all(isinstance(p, Probe) for p in probes):
        raise VflError("probes must be a probe file's path or a non-empty list of vfl Probe objects "
                       "(vfl.make_probes or vfl.load_probes give them)")
    return probes


def probes_fingerprint(probes: list[Probe]) -> str:
    """Identifies a probe set in run.json, so a folder is never resumed with other probes."""
    text = json.dumps([p.to_json() for p in probes], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def check_visual_tokens(adapter: Adapter, probes: list[Probe], tokens: list[int] | None, resize: bool) -> None:
    """Refuse ``tokens`` (offsets into the visual span) that some probe's image does not give, before any work."""
    if not tokens:
        return
    for probe in probes:
        image_a, _, _ = load_pair(probe, resize)
        start, end = adapter.build_prompt(image_a, probe.question).visual_span
        if max(tokens) >= end - start:
            raise VflError(f"--tokens {max(tokens)} does not exist: probe {probe.id}'s image gives visual tokens "
                           f"0..{end - start - 1}")


def model_name(adapter: Adapter) -> str:
    return getattr(adapter.model.config, "_name_or_path", "") or type(adapter.model).__name__


def check_run_options(batch_size: int | None, max_new_tokens: int) -> None:
    if batch_size is not None and batch_size < 1:
        raise VflError(f"--batch-size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise VflError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def plan_locate(num_layers: int, window: int = 1, sweep: str = "window", layers: list[int] | None = None,
                batch_size: int | None = None, max_new_tokens: int = 32, what: str = "kv",
                heads: list[int] | None = None, tokens: list[int] | None = None,
                num_heads: int | None = None, keep_injected: bool = False) -> list[Intervention]:
    """The interventions of a locate run (the two controls, whole swaps, first), or a `VflError` for options
    that do not fit the model; needs the layer and head counts only, so it runs before the model loads."""
    check_run_options(batch_size, max_new_tokens)
    swept = sweep_interventions(num_layers, sweep, window, layers, num_heads)
    if sweep == "heads":
        if heads is not None:
            raise VflError("--sweep heads swaps one head at a time; leave --heads out")
    elif layers is not None:
        check_layers(layers, len(swept))
        swept = [w for k, w in enumerate(swept) if k in layers]
    if heads is not None and num_heads is not None and max(heads, default=0) >= num_heads:
        raise VflError(f"head {max(heads)} does not exist: this model has key/value heads 0..{num_heads - 1}")
    return controls(num_layers) + narrowed(swept, what, heads, tokens, keep_injected)


# -- results -----------------------------------------------------------------------------------------
@dataclass
class Result:
    """An analysis' ``summary`` (as in its summary file), its records (``records``: a pandas DataFrame, one
    row per item x intervention) and ``out``, the run folder or None."""

    summary: dict
    record_list: list[dict]
    out: Path | None = None

    @property
    def records(self):
        import pandas

        return pandas.DataFrame(self.record_list)


class LocateResult(Result):
    """What `locate` found; ``vfl`` and ``classes`` per function, ``report()``, ``plot()``."""

    @property
    def vfl(self) -> dict[str, list[int]]:
        return {f: d["vfl"] for f, d in self.summary["functions"].items()}

    @property
    def classes(self) -> dict[str, str]:
        return {f: d["class"] for f, d in self.summary["functions"].items()}

    def report(self) -> str:
        """The Markdown report (report.md)."""
        return report.locate_report(self.summary)

    def plot(self, path: str | Path | None = None):
        """Transfer rate and normalised score per window; a matplotlib Figure (saved to ``path`` if given)."""
        return plots.plot_locate(self.summary, None if path is None else Path(path))


class DropResult(Result):
    """What `drop` measured: accuracy per function and number of dropped layers; ``plot()``."""

    def plot(self, path: str | Path | None = None):
        return plots.plot_drop(self.summary, None if path is None else Path(path))


# -- the analyses ------------------------------------------------------------------------------------
def locate(model, processor=None, probes=None, *, window: int = 1, sweep: str = "window",
           layers: list[int] | None = None, what: str = "kv", heads: list[int] | None = None,
           tokens: list[int] | None = None, keep_injected: bool = False, out: str | Path | None = None,
           max_new_tokens: int = 32,
           batch_size: int | None = None, resize: bool = False, scores: bool = True, alpha: float = 0.05,
           min_effect: float = 0.1, min_accuracy: float = 0.5, interventions: list | None = None,
           settings: dict | None = None) -> LocateResult | None:
    """Visual Token Swapping over every layer window (``sweep="window"``), cumulative swap (``"from"``:
    layers k..L-1, ``"upto"``: 0..k) or key/value head at ``layers`` (``"heads"``) for every probe, with the
    two controls (no layer, every layer). ``what`` swaps keys and values (``kv``), keys or values only, or the
    residual stream entering the layers (``hidden``); ``heads`` and ``tokens`` (offsets into the visual span)
    narrow the swap; ``keep_injected`` keeps A's DeepStack features in a hidden swap (Qwen3-VL).

    ``model``: a loaded transformers MLLM of a supported family (any device or ``device_map``) with its
    ``processor``, a vfl `Adapter`, or a spec string ("nano", a hub id, a local path). ``probes``: a list of
    `Probe` or a probe file. ``scores`` adds the teacher-forced log-probabilities of A's and B's answers per
    row and the normalised transfer score. ``alpha``, ``min_effect`` and ``min_accuracy`` set the VFL test
    and the classes. With ``out`` the run is resumable and writes results.jsonl, summary.json, curves.png
    and report.md there. Returns None on ranks other than 0 of a sharded run.

    ``interventions`` replaces the sweep with your own list, each a `vfl.Intervention` or a dict of its fields,
    e.g. ``[{"layers": [3, 4, 5]}, {"layers": [12], "what": "v", "heads": [0]}]``: each is tested against the
    no-swap control like a window (summary "sweep": "custom"), and every passing one is a VFL.
    """
    adapter = as_adapter(model, processor)
    probes = as_probes(probes)
    if interventions is not None:
        if (window, sweep, layers, what, heads, tokens, keep_injected) != (1, "window", None, "kv", None, None, False):
            raise VflError("give interventions= or a sweep's options (window, sweep, layers, what, heads, tokens), "
                           "not both: each intervention says its own")
        check_run_options(batch_size, max_new_tokens)
        own = custom_interventions(interventions, adapter.num_layers, adapter.num_kv_heads)
        sweep, interventions = "custom", controls(adapter.num_layers) + own
    else:
        interventions = plan_locate(adapter.num_layers, window, sweep, layers, batch_size, max_new_tokens, what,
                                    heads, tokens, adapter.num_kv_heads, keep_injected)
    # each swept intervention's k: its window's first layer, its head, or its place in a custom list
    k_of = {i.name: (k if sweep == "custom" else int(i.name.split()[-1])) for k, i in enumerate(interventions[2:])}
    decision.check_test(alpha, min_effect, min_accuracy)
    check_probe_images(probes, resize)
    check_visual_tokens(adapter, probes, tokens, resize)
    settings = settings or {"model": model_name(adapter), "dtype": str(adapter.model.dtype),
                            "probes": probes_fingerprint(probes), "max_new_tokens": max_new_tokens,
                            "window": window, "sweep": sweep, "layers": layers, "what": what, "heads": heads,
                            "tokens": tokens, "keep_injected": keep_injected, "resize": resize, "scores": scores,
                            **({"interventions": [dataclasses.asdict(i) for i in interventions[2:]]}
                               if sweep == "custom" else {})}
    decode = adapter.tokenizer.decode

    def work(probe: Probe, missing: list[str]):
        image_a, image_b, box_b = load_pair(probe, resize)
        prompt_a, prompt_b = adapter.build_prompt(image_a, probe.question), adapter.build_prompt(image_b, probe.question)
        check_pair(probe.id, prompt_a, prompt_b)
        pair = prefill_pair(adapter, prompt_a, prompt_b, hidden=what == "hidden")
        # The controls come first in every batch: their answers define `changed` and the score of every row.
        chosen = interventions[:2] + [i for i in interventions[2:] if i.name in missing]
        if scores:
            tokens, logprobs = swap_answers(adapter, prompt_a, prompt_b, chosen, max_new_tokens, batch_size, pair)
        else:
            tokens, logprobs = swap_sweep(adapter, prompt_a, prompt_b, chosen, max_new_tokens, batch_size, pair), None
        answers = [decode(t, skip_special_tokens=True).strip() for t in tokens]
        answer_a, answer_b = answers[0], answers[1]
        correct_a = credit(adapter, probe, "a", answer_a, image_a) >= 0.5
        for row, (intervention, answer) in enumerate(zip(chosen, answers)):
            if intervention.name in missing:
                yield {"id": probe.id, "function": probe.function, "intervention": intervention.name,
                       "layer": None if row < 2 else k_of[intervention.name], "layers": list(intervention.layers),
                       "answer": answer, "answer_a": answer_a, "answer_b": answer_b, "target_a": probe.answer_a,
                       "target_b": probe.answer_b, "changed": answer != answer_a,
                       "transferred": credit(adapter, probe, "b", answer, image_a, box_b) >= 0.5,
                       "correct_a": correct_a, **(_score(logprobs, row) if logprobs is not None else {})}

    def summarise(records):
        return decision.locate_summary(records, settings["model"], adapter.num_layers, window, sweep, alpha,
                                     min_effect, min_accuracy,
                                     {"what": what, "heads": heads, "tokens": tokens, "keep_injected": keep_injected})

    return _run(out, settings, "results.jsonl", probes, lambda p: p.id, interventions, work, "locate", summarise,
                report.write_locate, LocateResult)


def credit(adapter: Adapter, probe: Probe, which: str, answer: str, image, box=None) -> float:
    """The credit (0-1, `Adapter.credit`) ``answer`` earns as side ``which``'s answer to ``probe`` on ``image``
    (``box``: the side's box where its image was resized)."""
    target = probe.target(which)
    if box is not None:
        target["box"] = box
    return adapter.credit(answer, image.size, **target)


def _score(logprobs: list[list[float]], row: int) -> dict:
    """A row's log-probabilities of A's and B's answers, and its transfer score: the log-probability
    difference (B minus A) normalised so that the no-swap row gives 0 and the all-layer row 1 (None where
    both controls give the same difference, e.g. the same answer)."""
    diff = [lp_b - lp_a for lp_a, lp_b in logprobs]
    span = diff[1] - diff[0]
    score = (diff[row] - diff[0]) / span if abs(span) > 1e-6 else None
    return {"logp_a": logprobs[row][0], "logp_b": logprobs[row][1], "score": score}


def drop(model, processor=None, probes=None, *, out: str | Path | None = None, max_new_tokens: int = 32,
         batch_size: int | None = None, settings: dict | None = None) -> DropResult | None:
    """Accuracy with the visual KV dropped from the last N layers, N = 0..L, on both images of every probe."""
    adapter = as_adapter(model, processor)
    probes = as_probes(probes)
    check_run_options(batch_size, max_new_tokens)
    check_probe_images(probes, resize=True)
    interventions = last_layers(adapter.num_layers)
    settings = settings or {"model": model_name(adapter), "dtype": str(adapter.model.dtype),
                            "probes": probes_fingerprint(probes), "max_new_tokens": max_new_tokens}
    items = [(probe, which) for probe in probes for which in "ab"]
    decode = adapter.tokenizer.decode

    def work(item, missing: list[str]):
        probe, which = item
        image = probe.image(which)
        prompt = adapter.build_prompt(image, probe.question)
        chosen = [i for i in interventions if i.name in missing]
        for intervention, tokens in zip(chosen, drop_sweep(adapter, prompt, chosen, max_new_tokens, batch_size)):
            answer = decode(tokens, skip_special_tokens=True).strip()
            given = credit(adapter, probe, which, answer, image)
            yield {"id": f"{probe.id}/{which}", "function": probe.function, "intervention": intervention.name,
                   "dropped": len(intervention.layers), "layers": list(intervention.layers), "answer": answer,
                   "target": probe.target(which)["target"], "scorer": probe.scored_by, "credit": given,
                   "correct": given >= 0.5}

    def summarise(records):
        return decision.drop_summary(records, settings["model"], adapter.num_layers)

    return _run(out, settings, "drop.jsonl", items, lambda it: f"{it[0].id}/{it[1]}", interventions, work, "drop",
                summarise, report.write_drop, DropResult)


def _run(out, settings, name, items, item_id, interventions, work, desc, summarise, write, result_class):
    """In memory (``out`` None) or as the locked, resumable run in ``out``; the summary and files on rank 0."""
    names = [i.name for i in interventions]
    if out is None:
        records = runner.run(None, name, items, item_id, names, work, desc)
        return result_class(summarise(records), records)
    with runner.claim(out, settings) as folder:
        records = runner.run(folder, name, items, item_id, names, work, desc)
        if records is None:
            return None
        summary = summarise(records)
        write(summary, folder, records, items)
        return result_class(summary, records, Path(out))
