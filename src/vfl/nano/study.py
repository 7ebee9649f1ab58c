"""`vfl nano study`: which DINOv2 layer should feed nano's projector (the layer-selection study)?

One nano variant per similarity group (its representative layer, from `vfl vision-layers`), one fed
from the last layer, and one from a fusion of the representatives (their features concatenated into
the projector: LLaVA's own multi-layer `vision_feature_layer`). Every variant gets the same data,
recipe, seed and steps, then is evaluated per function on the same held-out samples. The recipe is a
small projector-only one by default, whose variants share encoder features computed once (the encoder is
frozen), or a run's own (``recipe``: the settings of its train.json, e.g. the shipped nano's), changed only
in the encoder layers, each variant trained as `vfl nano train` trains it. With ``lm_from`` every variant reads
through one trained run's language model, frozen, and trains only its own fresh projector: the variants then
differ in the encoder layers alone, and a projector learns to feed a model that already reads far sooner than a
whole nano learns to read. Finished variants are skipped when the command runs again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from vfl.errors import VflError
from vfl.nano.data import held_out_items
from vfl.nano.sample import FUNCTIONS, HELD_OUT_SEED
from vfl.nano.config import NanoSpec, config_from, current_settings, weights_folder
from vfl.nano.model import apply_trained, build_untrained
from vfl.nano.parts import DINOV2_S
from vfl.nano.config import TrainConfig
from vfl.nano.batches import cached, training_set
from vfl.nano.train import train
from vfl.runner import read_settings, refuse_other_settings


@dataclass
class StudyConfig:
    steps: int = 80
    per_function: int = 320  # training images per function
    n_eval: int = 40  # held-out samples per function
    batch_size: int = 16
    lora_rank: int = 0  # 0: projector only, so the variants differ only in what the projector reads
    seed: int = 0
    eval_seed: int = HELD_OUT_SEED
    recipe: dict | None = None  # a run's TrainConfig (asdict): each variant trains so, but for its layers and steps
    lm_from: str | None = None  # a trained run whose language model every variant reads through, frozen
    eval_batch: int = 1  # held-out items answered together (1: one at a time, as every study before the option)

    def variant(self, layers: list[int]) -> TrainConfig:
        """How the variant fed from ``layers`` trains."""
        if self.recipe is not None:
            recipe = config_from(self.recipe)
            config = replace(recipe, steps=self.steps, spec=replace(recipe.spec, vision_layers=layers))
        else:
            spec = NanoSpec(vision_layers=layers, lora_rank=self.lora_rank, lora_alpha=2 * self.lora_rank)
            config = TrainConfig(per_function=self.per_function, steps=self.steps, batch_size=self.batch_size,
                                 seed=self.seed, spec=spec)
        if self.lm_from is None:
            return config
        _, trained = weights_folder(self.lm_from, "--lm-from")  # its LoRA's size, whatever the recipe's
        return replace(config, lm_from=self.lm_from, full=False,
                       spec=replace(config.spec, lora_rank=trained.lora_rank, lora_alpha=trained.lora_alpha))

    @classmethod
    def following(cls, recipe: TrainConfig, steps: int | None, n_eval: int, lm_from: str | None = None,
                  eval_batch: int = 1) -> StudyConfig:
        """A study whose variants train as ``recipe`` does (for ``steps``, or the recipe's own), each from fresh
        weights: a variant reads other encoder layers, so no run's projector (``--init``) fits it."""
        recipe = replace(recipe, init=None, lm_from=None)
        return cls(steps=steps or recipe.steps, per_function=recipe.per_function, n_eval=n_eval,
                   batch_size=recipe.batch_size, lora_rank=recipe.spec.lora_rank, seed=recipe.seed,
                   recipe=json.loads(json.dumps(asdict(recipe))), lm_from=lm_from, eval_batch=eval_batch)


def read_groups(path: Path) -> dict[str, int]:
    """The representative layer of each group in a `vfl vision-layers` groups.json."""
    try:
        representatives = json.loads(Path(path).read_text())["representatives"]
    except (OSError, ValueError, KeyError, TypeError):
        raise VflError(f"{path} is not a groups.json written by `vfl vision-layers` (no representatives)") from None
    return {group: int(layer) for group, layer in representatives.items()}


def variants(representatives: dict[str, int], last: int = DINOV2_S["num_hidden_layers"]) -> dict[str, list[int]]:
    """Variant name -> the encoder layers it reads: each group's representative, the last layer, the fusion."""
    chosen = {f"{group}-{layer}": [layer] for group, layer in representatives.items()}
    if last not in representatives.values():
        chosen[f"last-{last}"] = [last]
    fused = sorted(set(representatives.values()))
    chosen["fusion-" + "-".join(map(str, fused))] = fused
    return chosen


def _training_data(out: Path, config: StudyConfig, layers: list[int]) -> dict:
    """The training set with every needed layer's features kept apart, computed once for all variants."""

    def build() -> dict:
        model, processor = build_untrained(NanoSpec(vision_layers=layers), config.seed)
        data = training_set(model, processor, config.per_function, config.seed, layers)
        features = data.pop("features")
        width = features.shape[-1] // len(layers)
        data["layers"] = {k: features[..., i * width:(i + 1) * width].clone() for i, k in enumerate(layers)}
        return data

    return cached(out / "features.pt", build)


def _evaluate(spec: NanoSpec, weights: Path, items, batch_size: int) -> tuple[dict, list[dict]]:
    from vfl.evaluate import evaluate
    from vfl.models import adapter_for

    model, processor = build_untrained(spec)
    return evaluate(adapter_for(apply_trained(model, spec, weights), processor), items, 32, batch_size)


def run_study(groups: Path, out: Path, config: StudyConfig) -> dict:
    """Train and evaluate every variant into ``out``; return (and write) study.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"groups": read_groups(groups), **asdict(config)}
    saved = out / "study-settings.json"
    if saved.exists():
        previous = read_settings(saved)
        if previous.get("recipe"):  # recorded before a training setting existed: at its default
            previous["recipe"] = current_settings(previous["recipe"])
        previous.setdefault("eval_batch", 1)  # recorded before --eval-batch: scored one item at a time
        refuse_other_settings(out, previous, settings, "study")
    saved.write_text(json.dumps(settings, indent=2) + "\n")
    chosen = variants(settings["groups"])
    needed = sorted({k for layers in chosen.values() for k in layers})
    # the default recipe's variants share one feature cache; a run's recipe (its suite, functions, answers,
    # streamed or cached data) is trained by `train` itself, variant by variant
    shared = config.recipe is None
    data = _training_data(out, config, needed) if shared else None
    items = held_out_items(FUNCTIONS, config.n_eval, config.eval_seed)
    results = {}
    for name, layers in chosen.items():
        folder = out / name
        result_file = folder / "eval.json"
        if not result_file.exists():
            train_config = config.variant(layers)
            variant_data = {"ids": data["ids"], "labels": data["labels"],
                            "features": torch.cat([data["layers"][k] for k in layers], dim=-1)} if shared else None
            print(f"training variant {name}: encoder layers {layers}")
            weights = train(folder, train_config, variant_data)
            summary, records = _evaluate(train_config.spec, weights, items, config.eval_batch)
            with (folder / "eval.records.jsonl").open("w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            result_file.write_text(json.dumps({"layers": layers, "functions": summary}, indent=2) + "\n")
        results[name] = json.loads(result_file.read_text())
    study = {"encoder": "nano (DINOv2-S)", "groups": settings["groups"], "settings": asdict(config),
             "variants": results}
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    (out / "study.md").write_text(study_table(study) + "\n")
    plot_study(study, out / "study.png")
    return study


def study_table(study: dict) -> str:
    lines = ["| variant | encoder layers | " + " | ".join(FUNCTIONS) + " | mean |",
             "|---|---|" + "---|" * (len(FUNCTIONS) + 1)]
    for name, row in study["variants"].items():
        cells = [f"{row['functions'][f]['accuracy']:.2f} ({row['functions'][f]['ci'][0]:.2f}-"
                 f"{row['functions'][f]['ci'][1]:.2f})" for f in FUNCTIONS]
        mean = sum(row["functions"][f]["accuracy"] for f in FUNCTIONS) / len(FUNCTIONS)
        lines.append(f"| {name} | {', '.join(map(str, row['layers']))} | " + " | ".join(cells) + f" | {mean:.2f} |")
    return "\n".join(lines)


def plot_study(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(study["variants"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for v, name in enumerate(names):
        rows = [study["variants"][name]["functions"][f] for f in FUNCTIONS]
        xs = [i + (v - (len(names) - 1) / 2) * width for i in range(len(FUNCTIONS))]
        heights = [r["accuracy"] for r in rows]
        errors = [[h - r["ci"][0] for h, r in zip(heights, rows)], [r["ci"][1] - h for h, r in zip(heights, rows)]]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(range(len(FUNCTIONS)), FUNCTIONS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy (95% CI)")
    ax.set_title("nano variants by the encoder layer(s) feeding the projector")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
