"""VFL-LoRA: LoRA (through PEFT) on the linear layers of chosen decoder layers only.

The layers come from a list, from a `vfl locate` summary (a function's VFL, optionally widened), or
from a baseline rule of the same size: `all`, `reversed` (the VFL mirrored in depth, avoiding the VFL)
and `random` (seeded, outside the VFL). Targets are the full names of the `nn.Linear` modules inside
those decoder layers of the language model, so the vision tower and projector never carry LoRA.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vfl.errors import VflError
from vfl.jsonl import check_file, json_kind, json_objects, read_json
from vfl.decision import load_vfls
from vfl.runner import fresh_folder, swap_in, swapped_in
from vfl.training import answer_cross_entropy, step_samples, warmup_cosine
from vfl.models import Adapter
from vfl.models.base import TEXT_KEYS
from vfl.probes.schema import check_record


def vfl_layers(summary_path: Path, function: str, margin: int = 0) -> list[int]:
    """A function's VFL from a `vfl locate` summary.json, widened by ``margin`` layers on each side."""
    vfls = load_vfls(summary_path, margin)
    if function not in vfls:
        raise VflError(f"{summary_path} has no VFL for {function!r} (functions with one: {', '.join(vfls) or 'none'})")
    return vfls[function]


def choose_layers(rule: str, num_layers: int, vfl: list[int] | None = None, seed: int = 0) -> list[int]:
    """Decoder layers for LoRA: ``all``, ``vfl``, ``reversed``, ``random`` or a comma-separated list."""
    if rule == "all":
        return list(range(num_layers))
    if rule in ("vfl", "reversed", "random"):
        if not vfl:
            raise VflError(f"--layers {rule} needs the VFL: pass --vfl SUMMARY --function F")
        if rule == "vfl":
            return sorted(vfl)
        outside = [k for k in range(num_layers) if k not in vfl]
        if len(outside) < len(vfl):
            raise VflError(f"the VFL covers {len(vfl)} of {num_layers} layers: too many for a same-size baseline")
        if rule == "random":
            return sorted(random.Random(seed).sample(outside, len(vfl)))
        mirrored = []
        for k in sorted(vfl):  # the mirror image in depth, moved to the nearest free layer outside the VFL
            target = num_layers - 1 - k
            free = [j for j in outside if j not in mirrored]
            mirrored.append(min(free, key=lambda j: (abs(j - target), j)))
        return sorted(mirrored)
    try:
        layers = sorted({int(v) for v in rule.split(",") if v.strip()})
    except ValueError:
        raise VflError(f"--layers takes all, vfl, reversed, random or layer numbers, not {rule!r}") from None
    bad = [k for k in layers if not 0 <= k < num_layers]
    if bad or not layers:
        raise VflError(f"layer index {bad[0] if bad else '(none)'} is out of range: the model has layers "
                       f"0..{num_layers - 1}")
    return layers


def lora_targets(adapter: Adapter, layers: list[int]) -> list[str]:
    """Full names of every nn.Linear inside the chosen decoder layers of the language model."""
    prefix = next(name for name, module in adapter.model.named_modules() if module is adapter.language_model)
    blocks = adapter.language_model.layers
    return [f"{prefix}.layers.{k}.{name}" for k in layers for name, module in blocks[k].named_modules()
            if isinstance(module, torch.nn.Linear)]


def add_vfl_lora(adapter: Adapter, layers: list[int], rank: int = 64, alpha: int = 64, dropout: float = 0.05):
    """Wrap the model with PEFT LoRA on the chosen layers; everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(adapter, layers))
    return get_peft_model(adapter.model, config)


def trainable_share(model) -> tuple[int, float]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, trainable / total


# -- training data -----------------------------------------------------------------------------------
def load_conversations(path: Path, image_folder: Path | None = None) -> list[dict]:
    """Samples ``{"id", "image", "turns": [(question, answer), ...]}`` from LLaVA-format data (a JSON list or
    JSONL of ``{"image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``;
    a record without ``image`` is a text-only sample, ``image`` None) or from a vfl probe file (each probe gives
    two samples, one per image)."""
    path = check_file(path, "training data")
    folder = Path(image_folder) if image_folder else path.parent
    if path.suffix == ".json":
        data = read_json(path, "training data")
        if not isinstance(data, list):
            raise VflError(f"{path} holds a JSON {json_kind(data)}; LLaVA data is an array of records")
        records = list(enumerate(data, 1))
    else:
        records = list(json_objects(path, "training data"))
    samples = []
    for index, record in records:
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise VflError(f"{where} is a JSON {json_kind(record)}, not an object")
        if "image_a" in record:  # a vfl probe
            check_record(record, where)
            for which in "ab":
                samples.append({"id": f"{record['id']}/{which}", "image": folder / record[f"image_{which}"],
                                "turns": [(record["question"], str(record[f"answer_{which}"]))]})
            continue
        samples.append({"id": str(record.get("id", index)), "image": _image_path(record, folder, where),
                        "turns": _turns(record.get("conversations"), where)})
    if not samples:
        raise VflError(f"training data {path} holds no samples")
    ids = [sample["id"] for sample in samples]
    if len(set(ids)) < len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise VflError(f"training data {path}: sample id {duplicate!r} occurs more than once")
    for sample in samples:
        if sample["image"] is not None and not sample["image"].is_file():
            raise VflError(f"sample {sample['id']}: image {sample['image']} does not exist")
    return samples


def _turns(conversation, where: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a LLaVA conversation: human and gpt turns alternate, each with a string value."""
    if not isinstance(conversation, list) or len(conversation) < 2:
        raise VflError(f"{where} needs conversations: a list of human and gpt turns")
    for number, turn in enumerate(conversation, 1):
        if not isinstance(turn, dict):
            raise VflError(f"{where}: turn {number} is a JSON {json_kind(turn)}, not an object with from and value")
        if not isinstance(turn.get("value"), str):
            raise VflError(f"{where}: turn {number} needs a string value")
    turns = []
    for human, gpt in zip(conversation[::2], conversation[1::2]):
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise VflError(f"{where}: conversations must alternate human and gpt")
        turns.append((human["value"].replace("<image>", "").strip(), gpt["value"]))
    return turns


def _image_path(record: dict, folder: Path, where: str) -> Path | None:
    image = record.get("image")
    if image is None or image == "":
        return None
    if not isinstance(image, str):
        raise VflError(f"{where}: image must be a path string, not a JSON {json_kind(image)}")
    return folder / image


def subset(samples: list[dict], selection_path: Path) -> list[dict]:
    """The samples whose ids a `vfl select` selection.json lists, in the pool's order."""
    try:
        ids = set(json.loads(Path(selection_path).read_text())["ids"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise VflError(f"cannot read the selection {selection_path} ({err})") from None
    unknown = ids - {sample["id"] for sample in samples}
    if unknown:
        raise VflError(f"the selection names {len(unknown)} ids the data does not hold (e.g. {sorted(unknown)[0]!r})")
    chosen = [sample for sample in samples if sample["id"] in ids]
    if not chosen:
        raise VflError(f"the selection {selection_path} is empty")
    return chosen


def open_image(sample: dict):
    """The sample's image as RGB, or None for a text-only sample."""
    from vfl.images import read_image

    return None if sample["image"] is None else read_image(sample["image"], f"sample {sample['id']}")


# What `encode` labels, recorded in every run folder that trains or scores on it: a folder written when the
# template's newline after the end of turn was labelled too (before 2026-12-07) refuses to resume.
LABELS = "through end of turn"


def encode(adapter: Adapter, image, turns: list[tuple[str, str]]) -> tuple[dict, torch.Tensor]:
    """Model inputs for a conversation (``image`` None: text only) and labels that cover each assistant
    answer through its end-of-turn token, not the whitespace a chat template writes after it: generation
    stops at the end of turn, so that token is never produced, and a model not trained on it (nano: 7-18 nats)
    would spend its first steps on it and, in VFL-select, let its swings under an ablation outweigh the
    answer's own."""
    messages, spans = [], []
    for i, (question, answer) in enumerate(turns):
        content = [{"type": "image"}] if i == 0 and image is not None else []
        messages.append({"role": "user", "content": content + [{"type": "text", "text": question}]})
        before = adapter.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        through = adapter.processor.apply_chat_template(messages, tokenize=False)
        spans.append((before, through))
    images = None if image is None else [image]
    full = adapter.processor(images=images, text=[spans[-1][1]], return_tensors="pt")
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, -100)
    for before, through in spans:
        start = adapter.processor(images=images, text=[before], return_tensors="pt")["input_ids"].shape[1]
        end = adapter.processor(images=images, text=[through.rstrip()], return_tensors="pt")["input_ids"].shape[1]
        labels[start:end] = ids[start:end]
    return dict(full), labels.unsqueeze(0)


def collate(examples: list[tuple[dict, torch.Tensor]], pad_id: int) -> list[tuple[dict, torch.Tensor]]:
    """Batches of encoded examples: text right-padded (labels with -100), image tensors concatenated.
    Examples whose image tensors cannot be concatenated (other shapes, or no image) go to separate batches."""
    groups: dict[tuple, list] = {}
    for inputs, labels in examples:
        signature = tuple((k, tuple(v.shape[1:])) for k, v in sorted(inputs.items())
                          if torch.is_tensor(v) and k not in TEXT_KEYS)
        groups.setdefault(signature, []).append((inputs, labels))
    batches = []
    for group in groups.values():
        length = max(labels.shape[1] for _, labels in group)

        def padded(tensor, value):
            return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]), value=value)

        batch = {"input_ids": torch.cat([padded(i["input_ids"], pad_id) for i, _ in group]),
                 "attention_mask": torch.cat([padded(i.get("attention_mask", torch.ones_like(i["input_ids"])), 0)
                                              for i, _ in group])}
        for key in group[0][0]:
            if key in batch or not torch.is_tensor(group[0][0][key]):
                continue
            values = [i[key] for i, _ in group]
            batch[key] = torch.cat([padded(v, 0) for v in values] if key in TEXT_KEYS else values)
        batches.append((batch, torch.cat([padded(labels, -100) for _, labels in group])))
    return batches


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over each row's answer tokens (labels != -100), one value per row."""
    return answer_cross_entropy(labels, lambda chosen: logits[:, :-1][chosen])[1]


# -- training --------------------------------------------------------------------------------------
@dataclass
class LoraRun:
    """The paper's recipe by default: rank 64, alpha 64, dropout 0.05, lr 2e-4, cosine, 3% warmup.
    Checked on construction, so a bad number fails before any data or model is loaded."""

    rank: int = 64
    alpha: int = 64
    dropout: float = 0.05
    lr: float = 2e-4
    warmup: float = 0.03
    steps: int = 100
    batch_size: int = 8
    micro_batch: int = 4  # samples per forward pass (memory); the loss is the same
    seed: int = 0
    save_every: int = 25

    def __post_init__(self):
        for name in ("rank", "steps", "batch_size", "micro_batch", "save_every"):
            if getattr(self, name) < 1:
                raise VflError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "warmup"):
            if not 0 <= getattr(self, name) < 1:
                raise VflError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.lr <= 0:
            raise VflError(f"--lr must be positive, got {self.lr}")


def train(adapter: Adapter, samples: list[dict], layers: list[int], run: LoraRun, out: Path,
          settings: dict | None = None) -> Path | None:
    """Train LoRA on ``layers`` into ``out`` (resuming from its checkpoint); data parallel under
    `accelerate launch` / `torchrun` (each rank takes every world-th sample, gradients are averaged).
    Returns the adapter folder on the main process. trainable.json records the seconds spent in
    optimizer steps, summed over resumed runs, so a resumed run reports its whole training time."""
    from vfl.runner import claim

    with claim(out, {**(settings or {}), "layers": layers, **asdict(run), "labels": LABELS}) as folder:
        return _train(adapter, samples, layers, run, folder)


def _train(adapter: Adapter, samples: list[dict], layers: list[int], run: LoraRun, out: Path) -> Path | None:
    from accelerate import Accelerator
    from tqdm import tqdm

    torch.manual_seed(run.seed)
    model = add_vfl_lora(adapter, layers, run.rank, run.alpha, run.dropout)
    count, share = trainable_share(model)
    accelerator = Accelerator(cpu=adapter.device.type == "cpu")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=run.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(run.warmup, run.steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:
        print(f"LoRA on layers {layers}: {count:,} trainable parameters ({100 * share:.2f}% of {count / share:,.0f})")
    progress_file, state_dir = out / "progress.json", last_checkpoint(out)
    step, losses, spent = 0, [], 0.0
    if state_dir is not None:
        accelerator.load_state(str(state_dir))
        progress = json.loads((state_dir / "progress.json").read_text())
        step, losses, spent = progress["step"], progress["losses"], progress.get("train_s", 0.0)
    mine = samples[accelerator.process_index::accelerator.num_processes]
    encoded: dict[int, tuple] = {}
    pad_id = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else 0

    def example(index: int):
        if index not in encoded:
            encoded[index] = encode(adapter, open_image(mine[index]), mine[index]["turns"])
        return encoded[index]

    def step_indices(step: int) -> list[int]:
        """The samples of an optimizer step (`vfl.training.step_samples`: a resumed run sees the same ones)."""
        return step_samples(step, run.batch_size, len(mine), run.seed)

    model.train()
    started = time.perf_counter()
    with tqdm(total=run.steps, initial=step, desc="lora", unit="step", disable=not accelerator.is_main_process,
              dynamic_ncols=True) as bar:
        while step < run.steps:
            indices = step_indices(step)
            batches = [batch for start in range(0, len(indices), run.micro_batch)
                       for batch in collate([example(i) for i in indices[start:start + run.micro_batch]], pad_id)]
            total = 0.0
            for number, (inputs, labels) in enumerate(batches):
                inputs = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                labels = labels.to(accelerator.device)
                sync = number == len(batches) - 1
                with nullcontext() if sync else accelerator.no_sync(model):
                    loss = answer_loss(model(**inputs).logits, labels).sum() / run.batch_size
                    accelerator.backward(loss)
                total += loss.item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(round(total, 4))
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            bar.update(1)
            if step % run.save_every == 0 or step == run.steps:
                progress = json.dumps({"step": step, "losses": losses, "train_s": spent + time.perf_counter() - started})
                save_checkpoint(accelerator, out, progress + "\n")
                if accelerator.is_main_process:
                    progress_file.write_text(progress + "\n")  # for people watching; the checkpoint holds its own
    if not accelerator.is_main_process:
        return None
    adapter_dir = out / "adapter"
    accelerator.unwrap_model(model).save_pretrained(adapter_dir)
    train_s = spent + time.perf_counter() - started
    (out / "trainable.json").write_text(json.dumps({"layers": layers, "trainable": count, "share": share,
                                                    "train_s": train_s}) + "\n")
    return adapter_dir


def save_checkpoint(accelerator, out: Path, progress: str) -> None:
    """The training state and its progress, replaced as a whole (`vfl.runner.swap_in`), so a kill at any moment
    leaves one complete checkpoint (`last_checkpoint` finds it)."""
    fresh = fresh_folder(out / "checkpoint", clear=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(fresh))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (fresh / "progress.json").write_text(progress)
        swap_in(fresh, out / "checkpoint")
    accelerator.wait_for_everyone()


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (`vfl.runner.swapped_in`: one killed between the renames is found too)."""
    folder = swapped_in(out / "checkpoint")
    if (folder / "progress.json").exists():
        return folder
    if (out / "checkpoint").is_dir() and (out / "progress.json").exists():  # a run from before this layout
        shutil.copy2(out / "progress.json", out / "checkpoint" / "progress.json")
        return out / "checkpoint"
    return None


def with_adapter(adapter: Adapter, adapter_dir: Path) -> Adapter:
    """The adapter's model with a trained LoRA merged in."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise VflError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json)")
    adapter.model = PeftModel.from_pretrained(adapter.model, str(adapter_dir)).merge_and_unload().eval()
    return adapter
