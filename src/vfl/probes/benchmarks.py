"""Probes from the benchmarks researchers already have on disk: `vfl probes from NAME PATH --out DIR`.

Each loader turns a local copy of a benchmark (a folder of parquet or arrow files, `save_to_disk` output, or,
with ``download``, a hub id) into the standard probe JSONL + images: one A/B pair per row, the two sides asking
the same question and differing in the answer, scored the benchmark's own way (`vfl.metrics.SCORERS`). Rows
that make no pair are counted by reason in ``DIR/source.json``, with the dataset's id, fingerprint and licence.

| NAME | pairs | scorer |
|---|---|---|
| cv-bench | Count: one question on two images with different counts (B's count among A's choices); Relation: the image mirrored, left and right swapped | choice |
| pope | one "Is there a X" on a yes-image and a no-image | yes-no |
| refcoco | one expression (none saying left or right); B is A mirrored with its box | box-iou |
| textvqa | one question on two images whose annotators' answers do not overlap | vqa-soft |
| ocrbench | text-recognition items asking one question, with different answers | contains |
| mmvp | its own consecutive pairs (one question, two images), where their answers differ | choice |
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from vfl.errors import VflError
from vfl.metrics import normalise, vqa_normalise
from vfl.probes.schema import Probe, load_probes, save_probes

WAITING = 16  # rows kept per question while they wait for a partner


@dataclass
class Row:
    """One benchmark row, as read: its image decoded, its other fields as the dataset holds them."""
    index: int
    image: Image.Image
    fields: dict


@dataclass
class Pair:
    question: str
    answer_a: str
    answer_b: str
    image_a: Image.Image
    image_b: Image.Image
    box_a: list[float] | None = None
    box_b: list[float] | None = None
    choices: list[str] | None = None
    accepted_a: list[str] | None = None
    accepted_b: list[str] | None = None
    rows: tuple[int, int] = (0, 0)
    function: str | None = None  # where it is not the benchmark's (CV-Bench's relations: ground)


@dataclass
class Pairer:
    """What turns a stream of rows into pairs, with the reason for every row left out."""
    unpaired: Counter = field(default_factory=Counter)
    waiting: dict = field(default_factory=lambda: defaultdict(list))
    NO_PARTNER = ""  # why a row still waiting at the end made no pair

    def feed(self, row: Row) -> list[Pair]:
        """The pairs ``row`` completes (none while it waits for a partner)."""
        raise NotImplementedError

    def close(self) -> None:
        """Count the rows still waiting once every row has been fed."""
        self.finish(self.NO_PARTNER)

    def match(self, key, row: Row, fits, make, no_partner: str):
        """Pair ``row`` with the first row waiting under ``key`` that ``fits`` it (``make(earlier, row)``), else
        let it wait; one pushed out of a full queue counts as ``no_partner``."""
        queue = self.waiting[key]
        for k, earlier in enumerate(queue):
            if fits(earlier, row):
                del queue[k]
                return make(earlier, row)
        queue.append(row)
        if len(queue) > WAITING:
            queue.pop(0)
            self.unpaired[no_partner] += 1
        return None

    def finish(self, no_partner: str) -> None:
        left = sum(len(q) for q in self.waiting.values())
        if left:
            self.unpaired[no_partner] += left
        self.waiting.clear()


def mirrored(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def mirrored_box(box: list[float], width: int) -> list[float]:
    return [width - box[2], box[1], width - box[0], box[3]]


LETTERS = "ABCDEFGH"


def _letter(choices: list, value) -> str | None:
    texts = [normalise(str(c)) for c in choices]
    return f"({LETTERS[texts.index(normalise(str(value)))]})" if normalise(str(value)) in texts else None


def _chosen(choices: list, answer: str):
    """The text of the option an answer letter such as "(C)" names, or None."""
    found = re.search(r"[A-Ha-h]", answer)
    index = ord(found.group(0).upper()) - ord("A") if found else len(choices)
    return choices[index] if index < len(choices) else None


def _count(row: Row):
    """The count a CV-Bench counting row's answer letter names."""
    return _chosen([str(c) for c in row.fields["choices"]], str(row.fields["answer"]))


def _counts_pair(a: Row, b: Row) -> bool:
    """B's count differs from A's and is among A's choices, so A's prompt serves both images."""
    return _count(b) is not None and _count(a) != _count(b) and _letter(a.fields["choices"], _count(b)) is not None


def _count_pair(a: Row, b: Row) -> Pair:
    a, b = (a, b) if _counts_pair(a, b) else (b, a)
    return Pair(a.fields["prompt"], str(a.fields["answer"]), _letter(a.fields["choices"], _count(b)), a.image,
                b.image, choices=[str(c) for c in a.fields["choices"]], rows=(a.index, b.index))


class CVBench(Pairer):
    NO_PARTNER = "Count: no other image with the same question, another count and that count among the choices"

    def feed(self, row: Row):
        task, choices = row.fields["task"], [str(c) for c in row.fields["choices"]]
        answer = str(row.fields["answer"])
        if task == "Count":
            pair = self.match(row.fields["prompt"].split("\n")[0], row,
                              lambda a, b: _counts_pair(a, b) or _counts_pair(b, a), _count_pair, self.NO_PARTNER)
            return [pair] if pair else []
        if task == "Relation":
            said = _chosen(choices, answer)
            other = {"left": "right", "right": "left"}.get(normalise(str(said)))
            if other is None or _letter(choices, other) is None:
                self.unpaired["Relation: the answer is not left or right (a mirror keeps it)"] += 1
                return []
            return [Pair(row.fields["prompt"], answer, _letter(choices, other), row.image, mirrored(row.image),
                         choices=choices, rows=(row.index, row.index), function="ground")]
        self.unpaired[f"task {task}: no pair of this kind"] += 1
        return []


class POPE(Pairer):
    NO_PARTNER = "no image with the same question and the other answer"

    def feed(self, row: Row):
        answer = normalise(str(row.fields["answer"]))
        if answer not in ("yes", "no"):
            self.unpaired["the answer is not yes or no"] += 1
            return []

        def make(a: Row, b: Row):
            return Pair(a.fields["question"], normalise(str(a.fields["answer"])),
                        normalise(str(b.fields["answer"])), a.image, b.image, rows=(a.index, b.index))

        pair = self.match(normalise(row.fields["question"]), row,
                          lambda a, b: normalise(str(a.fields["answer"])) != normalise(str(b.fields["answer"])),
                          make, self.NO_PARTNER)
        return [pair] if pair else []


SIDES = {"left", "right", "leftmost", "rightmost", "lefter", "righter"}
GROUNDING_QUESTION = "Locate {} in the image and give its bounding box."


class RefCOCO(Pairer):
    def feed(self, row: Row):
        usable = [e for e in _strings(row.fields["answer"]) if e.strip() and not SIDES & set(normalise(e).split())]
        bbox = row.fields["bbox"]
        if not usable:
            self.unpaired["every expression says left or right (a mirror would make it wrong)"] += 1
            return []
        if bbox is None or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            self.unpaired["no box of positive size"] += 1
            return []
        x, y, w, h = (float(v) for v in bbox)
        box = [x, y, x + w, y + h]
        return [Pair(GROUNDING_QUESTION.format(usable[0]), usable[0], usable[0], row.image, mirrored(row.image),
                     box, mirrored_box(box, row.image.width), rows=(row.index, row.index))]


def _strings(value) -> list[str]:
    """A cell that holds one answer or a list of them, as a list of strings."""
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _most_common(answers: list[str]) -> str:
    counts = Counter(vqa_normalise(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[vqa_normalise(a)] == best)


class TextVQA(Pairer):
    NO_PARTNER = "no image with the same question and answers that do not overlap"

    def feed(self, row: Row):
        answers = _strings(row.fields["answers"])
        if not any(vqa_normalise(a) for a in answers):
            self.unpaired["no answers"] += 1
            return []

        def fits(a: Row, b: Row):
            return not ({vqa_normalise(x) for x in _strings(a.fields["answers"])}
                        & {vqa_normalise(x) for x in _strings(b.fields["answers"])})

        def make(a: Row, b: Row):
            accepted_a, accepted_b = _strings(a.fields["answers"]), _strings(b.fields["answers"])
            return Pair(a.fields["question"], _most_common(accepted_a), _most_common(accepted_b), a.image, b.image,
                        accepted_a=accepted_a, accepted_b=accepted_b, rows=(a.index, b.index))

        pair = self.match(normalise(row.fields["question"]), row, fits, make, self.NO_PARTNER)
        return [pair] if pair else []


class OCRBench(Pairer):
    NO_PARTNER = "no other text-recognition image with the same question and another answer"

    def feed(self, row: Row):
        kind = str(row.fields["question_type"])
        if not kind.endswith("Recognition") or "Mathematical" in kind:
            self.unpaired[f"{kind}: not text recognition"] += 1
            return []

        def words(r: Row):
            return {normalise(v) for v in _strings(r.fields["answer"])}

        def make(a: Row, b: Row):
            accepted_a, accepted_b = _strings(a.fields["answer"]), _strings(b.fields["answer"])
            return Pair(a.fields["question"], accepted_a[0], accepted_b[0], a.image, b.image,
                        accepted_a=accepted_a, accepted_b=accepted_b, rows=(a.index, b.index))

        if not any(a.strip() for a in _strings(row.fields["answer"])):
            self.unpaired["no answer"] += 1
            return []
        pair = self.match(row.fields["question"].strip(), row, lambda a, b: not words(a) & words(b), make,
                          self.NO_PARTNER)
        return [pair] if pair else []


MMVP_QUESTION = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."


def mmvp_choices(options: str) -> list[str]:
    """"(a) Open (b) Closed" as ["Open", "Closed"]."""
    return [text.strip() for text in re.split(r"\([a-h]\)", options)[1:]]


class MMVP(Pairer):
    """Rows 1-2, 3-4, ... are pairs: one question on two images chosen to differ in a visual pattern."""
    first: Row | None = None

    def feed(self, row: Row):
        if self.first is None:
            self.first = row
            return []
        a, b, self.first = self.first, row, None
        if (a.fields["Question"].strip(), a.fields["Options"].strip()) != (b.fields["Question"].strip(),
                                                                           b.fields["Options"].strip()):
            self.unpaired["a consecutive pair asks different questions or offers different options"] += 2
            return []
        if normalise(a.fields["Correct Answer"]) == normalise(b.fields["Correct Answer"]):
            self.unpaired["a consecutive pair has the same answer"] += 2
            return []
        question = MMVP_QUESTION.format(question=a.fields["Question"].strip(), options=a.fields["Options"].strip())
        return [Pair(question, a.fields["Correct Answer"].strip(), b.fields["Correct Answer"].strip(), a.image, b.image,
                     choices=mmvp_choices(a.fields["Options"]), rows=(a.index, b.index))]

    def close(self) -> None:
        if self.first is not None:
            self.unpaired["the last row has no partner"] += 1


@dataclass(frozen=True)
class Benchmark:
    name: str
    dataset_id: str
    columns: tuple[str, ...]
    function: str
    scorer: str
    pairer: type
    split: str
    config: str | None = None
    ordered: bool = False  # pairs follow the rows' order (MMVP): never shuffled


BENCHMARKS = {b.name: b for b in (
    Benchmark("cv-bench", "nyu-visionx/CV-Bench", ("image", "prompt", "choices", "answer", "task"), "count", "choice",
              CVBench, "test", "2D"),
    Benchmark("pope", "lmms-lab/POPE", ("image", "question", "answer", "category"), "recog", "yes-no", POPE, "test"),
    Benchmark("refcoco", "lmms-lab/RefCOCO", ("image", "answer", "bbox"), "ground", "box-iou", RefCOCO, "val"),
    Benchmark("textvqa", "lmms-lab/textvqa", ("image", "question", "answers"), "ocr", "vqa-soft", TextVQA,
              "validation"),
    Benchmark("ocrbench", "echo840/OCRBench", ("image", "question", "question_type", "answer"), "ocr", "contains",
              OCRBench, "test"),
    Benchmark("mmvp", "lmms-lab-eval/MMVP", ("image", "Question", "Options", "Correct Answer"), "recog", "choice", MMVP,
              "train", ordered=True),
)}


def _datasets():
    try:
        import datasets
    except ImportError:
        raise VflError("`vfl probes from` reads benchmarks with the datasets library: pip install datasets") from None
    datasets.disable_progress_bars()
    return datasets


def _data_files(folder: Path, config: str | None, split: str) -> tuple[str, list[Path]]:
    """The parquet (else arrow) files of a benchmark folder (a hub snapshot), narrowed to ``config``'s
    sub-folder or files (CV-Bench's test_2d.parquet) and to ``split``'s files where the folder has several."""
    for kind in ("parquet", "arrow"):
        files = sorted(folder.rglob(f"*.{kind}"))
        if config and any(config in f.relative_to(folder).parts[:-1] for f in files):
            files = [f for f in files if config in f.relative_to(folder).parts[:-1]]
        elif config and any(config.lower() in re.split(r"[-_.]", f.name.lower()) for f in files):
            files = [f for f in files if config.lower() in re.split(r"[-_.]", f.name.lower())]  # test_2d.parquet
        named = [f for f in files if re.match(rf"{re.escape(split)}\b|{re.escape(split)}[-_.]", f.name)]
        if named:
            files = named
        if files:
            return kind, files
    raise VflError(f"{folder} holds no parquet or arrow files and no `save_to_disk` output")


def open_rows(benchmark: Benchmark, path: str, split: str, config: str | None, download: bool, seed: int):
    """(the rows as an iterable dataset, what identifies the source) of a local copy or, with ``download``, the
    hub; shuffled by ``seed`` unless the benchmark's pairs follow the rows' order."""
    datasets = _datasets()
    folder = Path(path).expanduser()
    source = {"benchmark": benchmark.name, "dataset_id": benchmark.dataset_id, "path": path, "split": split,
              "config": config}
    if folder.exists():
        if not folder.is_dir():
            raise VflError(f"{folder} is a file; give the benchmark's folder (parquet/arrow files or save_to_disk output)")
        if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
            data = datasets.load_from_disk(str(folder))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise VflError(f"{folder} has no split {split!r}; it has {', '.join(data)} (pass --split)")
                data = data[split]
            source.update(fingerprint=data._fingerprint, license=data.info.license or None, rows=len(data))
            if not benchmark.ordered:
                data = data.shuffle(seed=seed)
            return data.to_iterable_dataset(), source
        kind, files = _data_files(folder, config, split)
        from vfl.fingerprint import digest

        data = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", streaming=True)
        source.update(files=[str(f.relative_to(folder)) for f in files], fingerprint=digest(files), license=None)
    elif download:
        data = datasets.load_dataset(path, config, split=split, streaming=True)
        source.update(revision=_hub_revision(path), license=data.info.license or None)
    else:
        raise VflError(f"{path} does not exist; give a local copy of {benchmark.dataset_id}, or pass --download to "
                       "read it from the Hugging Face hub")
    return (data if benchmark.ordered else shuffled(data, seed)), source


def _hub_revision(dataset_id: str) -> str | None:
    """The commit of the hub dataset read, where the hub says (metadata only: a failure here stops nothing)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(dataset_id).sha
    except Exception:  # noqa: BLE001 - offline, gated or renamed: the rows were read all the same
        return None


def shuffled(rows, seed: int, buffer: int = 64):
    """``rows`` in a seeded order, drawn from a buffer of ``buffer`` rows as they stream in (a set too large to
    hold is never held; `datasets`' own streaming shuffle spent 5 s on its first row here)."""
    rng, pool = random.Random(seed), []
    for row in rows:
        pool.append(row)
        if len(pool) >= buffer:
            yield pool.pop(rng.randrange(len(pool)))
    rng.shuffle(pool)
    yield from pool


def check_columns(benchmark: Benchmark, columns, path: str) -> None:
    missing = [c for c in benchmark.columns if c not in (columns or ())]
    if missing:
        raise VflError(f"{path} is no {benchmark.name} copy: it lacks the column(s) {', '.join(missing)} "
                       f"(it has {', '.join(columns or ()) or 'none'})")


def as_image(value, where: str) -> Image.Image:
    """A dataset's image cell (decoded by `datasets`, or raw {"bytes", "path"}) as RGB."""
    if isinstance(value, dict):
        if value.get("bytes"):
            value = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            value = Image.open(value["path"])
    if not isinstance(value, Image.Image):
        raise VflError(f"{where}: the image column holds no image")
    return value.convert("RGB")


def probes_from(name: str, path: str | None = None, out: str | Path = "probes", *, limit: int | None = None,
                seed: int = 0, split: str | None = None, config: str | None = None,
                download: bool = False) -> list[Probe]:
    """Write ``name``'s pairs (`BENCHMARKS`) from a local copy at ``path`` (or its hub id with ``download``) as
    ``out``/probes.jsonl + ``out``/images/, at most ``limit`` of them, and ``out``/source.json (the dataset,
    its fingerprint and licence, rows read, pairs made, rows left out by reason); returns the probes."""
    from tqdm import tqdm

    if name not in BENCHMARKS:
        raise VflError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    if limit is not None and limit < 1:
        raise VflError(f"--limit must be at least 1, got {limit}")
    benchmark = BENCHMARKS[name]
    path = path or benchmark.dataset_id
    split, config = split or benchmark.split, config or benchmark.config
    out = Path(out)
    if (out / "probes.jsonl").exists():
        raise VflError(f"{out / 'probes.jsonl'} exists; give another --out or remove it")
    existing = next(p for p in (out, *out.parents) if p.exists())  # nothing is written before the rows are read
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise VflError(f"cannot write into {out}: {existing} is {'a file' if not existing.is_dir() else 'not writable'}")
    data, source = open_rows(benchmark, path, split, config, download, seed)
    pairer, probes, rows, resized = benchmark.pairer(), [], 0, 0
    with tqdm(desc=f"probes from {name}", unit="row", dynamic_ncols=True) as bar:
        for index, fields in enumerate(data):
            if index == 0:
                check_columns(benchmark, list(fields), path)
            rows += 1
            bar.update(1)
            row = Row(index, as_image(fields["image"], f"{path} row {index}"), fields)
            for pair in pairer.feed(row):
                resized += _write_pair(benchmark, pair, len(probes), out, probes)
            bar.set_postfix(pairs=len(probes))
            if limit is not None and len(probes) >= limit:
                break
        else:
            pairer.close()
    if rows == 0:
        raise VflError(f"{path} holds no rows in split {split!r}")
    if not probes:
        raise VflError(f"no {name} row of {path} made a pair ({rows} read): "
                       + "; ".join(f"{n} {why}" for why, n in pairer.unpaired.items()))
    save_probes(probes, out / "probes.jsonl")
    source.update(rows_read=rows, pairs=len(probes), stopped_at_limit=limit is not None and len(probes) >= limit,
                  unpaired=dict(pairer.unpaired), b_resized_to_a=resized, seed=seed)
    (out / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return load_probes(out / "probes.jsonl")


def _write_pair(benchmark: Benchmark, pair: Pair, k: int, out: Path, probes: list[Probe]) -> int:
    """Save one pair's images (B resized to A's size where they differ, its box with it) and add its probe;
    returns 1 where B was resized."""
    probe_id = f"{benchmark.name}-{k:05d}"
    image_b, box_b, resized = pair.image_b, pair.box_b, 0
    if image_b.size != pair.image_a.size:
        sx, sy = pair.image_a.width / image_b.width, pair.image_a.height / image_b.height
        image_b, resized = image_b.resize(pair.image_a.size, Image.BICUBIC), 1
        box_b = box_b and [box_b[0] * sx, box_b[1] * sy, box_b[2] * sx, box_b[3] * sy]
    (out / "images").mkdir(parents=True, exist_ok=True)
    for which, image in (("a", pair.image_a), ("b", image_b)):
        image.save(out / "images" / f"{probe_id}_{which}.png")
    probes.append(Probe(probe_id, pair.function or benchmark.function, pair.question, f"images/{probe_id}_a.png", f"images/{probe_id}_b.png",
                        pair.answer_a, pair.answer_b, pair.box_a, box_b, benchmark.scorer, pair.choices,
                        pair.accepted_a, pair.accepted_b, root=out))
    return resized
