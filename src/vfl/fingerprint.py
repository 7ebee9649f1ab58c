"""What identifies a run's inputs, recorded in its run.json so that a rerun resumes only on the same ones.

A path says where an input was, not what it held: edit a probe file in place, or run the same command from
another folder with a relative ``--model``, and the old records would be resumed on new inputs. So a run
records the content of its probe (or data) file and of every image it names, and the model's resolved place
with a digest of its config and of its weights' index (tensor names, shapes and offsets; not every byte of a
7B checkpoint). A damaged weights file is found here too, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from vfl.errors import VflError, model_not_found


def digest(files, extra: str = "") -> str:
    """sha256 (hex, 16 digits) over ``extra`` and each file's name and bytes, in the order given."""
    sha = hashlib.sha256(extra.encode())
    for path in files:
        path = Path(path)
        sha.update(path.name.encode() + b"\0")
        try:
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
        except FileNotFoundError:
            raise VflError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise VflError(f"{path} is a folder, not a file") from None
    return sha.hexdigest()[:16]


def safetensors_index(path: Path) -> bytes:
    """A safetensors file's header (its tensors' names, dtypes, shapes and offsets) and size; a file too short
    or whose header is not JSON is one sentence (a truncated download, a file of another kind)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = handle.read(length) if 0 < length <= size - 8 else b""
    try:
        json.loads(header)
    except ValueError:
        raise VflError(f"{path} is not a readable safetensors file (truncated or damaged); download or save it "
                       "again") from None
    return header + str(size).encode()


def model_identity(spec: str, download: bool = False) -> dict:
    """``model_path`` (where the model is read from, resolved) and ``model_sha256`` (its config and weights'
    index; for nano, its trained weights whole: they are small and change in place when shipped)."""
    from vfl.models import nano_weights

    weights = nano_weights(spec)
    if weights is not None:
        files = sorted(weights.glob("*.safetensors")) + [weights / "spec.json"]
        return {"model_path": str(weights.resolve()), "model_sha256": digest(files)}
    if spec.startswith("tiny:"):  # built from code, the same every time
        return {"model_path": spec}
    folder = Path(spec) if os.path.isdir(spec) else _hub_snapshot(spec, download)
    if folder is None:  # a hub id to be downloaded: its revision is not known before the download
        return {"model_path": spec}
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    parts = [] if indexes else sorted(folder.glob("*.safetensors"))
    sha = hashlib.sha256(b"".join(safetensors_index(p) for p in parts))
    return {"model_path": str(folder.resolve()),
            "model_sha256": digest([folder / "config.json", *indexes], sha.hexdigest())}


def _hub_snapshot(spec: str, download: bool) -> Path | None:
    """The local snapshot folder of a hub id (its name is the revision), or None where it is not cached."""
    from transformers.utils import cached_file

    try:
        config = cached_file(spec, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        config = None
    if config is None and not download:
        raise model_not_found(spec, download)
    return None if config is None else Path(config).parent


def probes_identity(path: Path, probes) -> dict:
    """``probes_sha256`` of a probe file and every image its probes name, in order."""
    return {"probes_sha256": digest([path] + [p.path(which) for p in probes for which in "ab"])}
