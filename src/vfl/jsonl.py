"""Reading a user's JSONL file, with every problem reported as one sentence naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from vfl.errors import VflError


def json_objects(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-empty line of ``path`` (``what`` names the file in errors)."""
    path = Path(path)
    if not path.is_file():
        raise VflError(f"{what} {path} does not exist")
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise VflError(f"{path}:{lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise VflError(f"{path}:{lineno} is not a JSON object")
            yield lineno, record
