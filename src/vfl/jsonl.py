"""Reading a user's JSONL file, with every problem reported as one sentence naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from vfl.errors import VflError


def check_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; else one sentence: it does not exist, or it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise VflError(f"{what} {path} is a folder; give the file itself")
    if not path.is_file():
        raise VflError(f"{what} {path} does not exist")
    return path


def json_objects(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-empty line of ``path`` (``what`` names the file in errors)."""
    path = check_file(path, what)
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise VflError(f"{path}:{lineno} is not UTF-8 text; save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise VflError(f"{path}:{lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise VflError(f"{path}:{lineno} is not a JSON object")
            yield lineno, record


def read_json(path: Path, what: str):
    """A whole JSON file, with the same one-sentence errors."""
    path = check_file(path, what)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VflError(f"{path} is not UTF-8 text; save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise VflError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words (object, array, string, ...)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
