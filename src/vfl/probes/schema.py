"""The probe: a counterfactual image pair, stored as JSONL with image files beside it.

One JSON object per line::

    {"id": "count-0007", "function": "count", "question": "How many ...?",
     "image_a": "images/count-0007_a.png", "image_b": "images/count-0007_b.png",
     "answer_a": "3", "answer_b": "5", "box_a": null, "box_b": null}

Image paths are relative to the JSONL file's folder (absolute paths work too). ``box_a``/``box_b``
are pixel boxes ``[x0, y0, x1, y1]`` and required where the probe is scored by box (``ground`` probes).
Optional, for probes drawn from a benchmark (`vfl.probes.benchmarks`): ``scorer``, how an answer is scored
(`vfl.metrics.SCORERS`; the function's own by default), ``choices`` (the options' texts, in letter order, for
``choice``) and ``accepted_a``/``accepted_b`` (every accepted answer, e.g. TextVQA's ten, for ``vqa-soft`` and
``contains``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from vfl.errors import VflError
from vfl.images import read_image
from vfl.jsonl import json_objects
from vfl.metrics import SCORER_OF, SCORERS

FUNCTIONS = ("recog", "count", "ground", "ocr")
ALIASES = {"recognition": "recog", "counting": "count", "grounding": "ground", "text": "ocr"}
REQUIRED = ("id", "function", "question", "image_a", "image_b", "answer_a", "answer_b")
OPTIONAL = ("box_a", "box_b", "scorer", "choices", "accepted_a", "accepted_b")


def parse_function(name: str, known: tuple[str, ...] = FUNCTIONS) -> str:
    """Canonical function name, or a clear error listing the ``known`` ones."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in known:
        raise VflError(f"unknown function {name!r}; choose from {', '.join(known)}")
    return key


def parse_functions(names: str, known: tuple[str, ...] = FUNCTIONS, unique: bool = True) -> list[str]:
    """The comma-separated function names, checked; a name given twice counts once unless not ``unique``."""
    functions = [parse_function(n, known) for n in names.split(",") if n.strip()]
    if not functions:
        raise VflError("no function given; choose from " + ", ".join(known))
    return list(dict.fromkeys(functions)) if unique else functions


@dataclass
class Probe:
    id: str
    function: str
    question: str
    image_a: str
    image_b: str
    answer_a: str
    answer_b: str
    box_a: list[float] | None = None
    box_b: list[float] | None = None
    scorer: str | None = None
    choices: list[str] | None = None
    accepted_a: list[str] | None = None
    accepted_b: list[str] | None = None
    root: Path = Path(".")

    @property
    def scored_by(self) -> str:
        """The scorer of its answers: its own, else its function's (`vfl.metrics.SCORER_OF`)."""
        return self.scorer or SCORER_OF[self.function]

    def target(self, which: str) -> dict:
        """What side ``which``'s answer is scored against, as `vfl.metrics.score`'s arguments after the answer:
        the side's answer and box, the other side's answer, the accepted answers and the choices."""
        mine, other = (self.answer_a, self.answer_b) if which == "a" else (self.answer_b, self.answer_a)
        return {"scorer": self.scored_by, "target": mine, "box": self.box_a if which == "a" else self.box_b,
                "other": other, "accepted": self.accepted_a if which == "a" else self.accepted_b,
                "choices": self.choices}

    def image(self, which: str) -> Image.Image:
        """Image ``a`` or ``b`` as RGB; a missing or unreadable file is a `VflError` naming the probe."""
        return read_image(self.path(which), f"probe {self.id}")

    def decoded_size(self, which: str) -> tuple[int, int]:
        """Image ``a`` or ``b``'s size, its pixels decoded (a truncated file fails here)."""
        return read_image(self.path(which), f"probe {self.id}", lambda image: image.convert("RGB").size)

    def path(self, which: str) -> Path:
        name = Path(self.image_a if which == "a" else self.image_b)
        return name if name.is_absolute() else self.root / name

    def to_json(self) -> dict:
        record = asdict(self)
        del record["root"]
        return {k: v for k, v in record.items() if k in REQUIRED or k in ("box_a", "box_b") or v is not None}


# Each field's types and how an error names them (a count may be written as a number, an id as one too)
TYPES = {"id": ((str, int), "a string or a number"), "function": ((str,), "a string"),
         "question": ((str,), "a non-empty string"), "image_a": ((str,), "a non-empty string"),
         "image_b": ((str,), "a non-empty string"), "answer_a": ((str, int, float), "a string or a number"),
         "answer_b": ((str, int, float), "a string or a number")}


def _is_box(value) -> bool:
    return (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def check_record(record: dict, where: str) -> None:
    """Refuse a probe record whose fields are missing, unknown or of the wrong type, naming ``where`` (file:line)."""
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise VflError(f"{where} lacks the field(s) {', '.join(missing)}")
    unknown = set(record) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise VflError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    check_fields(record, TYPES, where, ("box_a", "box_b"))
    if record.get("scorer") is not None and record["scorer"] not in SCORERS:
        raise VflError(f"{where}: scorer must be one of {', '.join(SCORERS)}, got {json.dumps(record['scorer'])}")
    check_string_lists(record, ("choices", "accepted_a", "accepted_b"), where)


def check_string_lists(record: dict, keys, where: str) -> None:
    """Refuse a record whose ``keys`` are neither null nor a non-empty list of strings, naming ``where``."""
    for key in keys:
        value = record.get(key)
        if value is not None and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise VflError(f"{where}: {key} must be a non-empty list of strings or null, got {json.dumps(value)}")


def check_fields(record: dict, types: dict, where: str, boxes=()) -> None:
    """Refuse a record whose fields in ``types`` ({key: (types, how an error names them)}) are of another type,
    or whose ``boxes`` are neither null nor [x0, y0, x1, y1]; naming ``where`` (file:line) and the value."""
    for key, (kinds, described) in types.items():
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, str) and not value.strip()):
            raise VflError(f"{where}: {key} must be {described}, got {json.dumps(value)}")
    for key in boxes:
        if record.get(key) is not None and not _is_box(record[key]):
            raise VflError(f"{where}: {key} must be [x0, y0, x1, y1] in pixels or null, got {json.dumps(record[key])}")


def load_probes(path: str | Path, functions: list[str] | None = None) -> list[Probe]:
    """Read and check a probe file; every problem is one `VflError` naming the file, line or probe."""
    path = Path(path)
    probes, seen = [], set()
    for lineno, record in json_objects(path, "probe file"):
        check_record(record, f"{path}:{lineno}")
        record["id"] = str(record["id"])
        record["function"] = parse_function(record["function"])
        if record["id"] in seen:
            raise VflError(f"{path}:{lineno} repeats the probe id {record['id']}")
        seen.add(record["id"])
        if (record.get("scorer") or SCORER_OF[record["function"]]) == "box-iou":
            for key in ("box_a", "box_b"):
                if record.get(key) is None:
                    raise VflError(f"{path}:{lineno}: probe {record['id']} is scored by box and needs {key} as "
                                   "[x0, y0, x1, y1]")
        probes.append(Probe(root=path.parent, **{k: (str(v) if k.startswith("answer") else v)
                                                  for k, v in record.items()}))
    if not probes:
        raise VflError(f"probe file {path} holds no probes")
    if functions is not None:
        probes = [p for p in probes if p.function in functions]
        if not probes:
            raise VflError(f"probe file {path} holds no probes of the function(s) {', '.join(functions)}")
    for probe in probes:
        for which in "ab":
            image = probe.path(which)
            if not image.is_file():
                raise VflError(f"probe {probe.id}: image {image} "
                               f"{'is a folder, not an image' if image.is_dir() else 'does not exist'}")
    return probes


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
    """Decode every image before any work (a header can be whole above truncated pixels), so bad input fails
    before anything is written."""
    for probe in probes:
        size_a, size_b = probe.decoded_size("a"), probe.decoded_size("b")
        if size_a != size_b and not resize:
            raise _size_mismatch(probe, size_a, size_b)


def save_probes(probes: list[Probe], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for probe in probes:
            handle.write(json.dumps(probe.to_json()) + "\n")
