"""Resumable, shardable runs: an append-only JSONL of records keyed by (item, intervention).

A killed run loses at most the line being written (it is cut off on the next start) and a rerun skips
every key already on disk, so no record is lost or written twice. Under `torchrun` / `accelerate launch`
each rank takes every world-th item and appends to its own file; rank 0 folds them in at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch.distributed as dist
from tqdm import tqdm

from vfl.errors import VflError


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    _, world = rank_and_world()
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()


def read_records(path: Path) -> list[dict]:
    """Records of a results file; a torn last line (a killed write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            if line.strip():
                records.append(json.loads(line))
        except ValueError:
            if offset + len(line) < len(data):
                raise VflError(f"{path} is corrupt at byte {offset}; move it away to start this run afresh") from None
            with path.open("r+b") as handle:
                handle.truncate(offset)
            break
        offset += len(line)
    return records


class ResultLog:
    """The results file of one run folder (``name``), plus the per-rank files of a sharded run."""

    def __init__(self, out: Path, name: str):
        self.out, self.name = Path(out), name
        self.rank, self.world = rank_and_world()
        self.path = self.out / name
        self.own = self.path if self.world == 1 else self.out / f"{Path(name).stem}.rank{self.rank}.jsonl"

    def _files(self) -> list[Path]:
        return [self.path] + sorted(self.out.glob(f"{Path(self.name).stem}.rank*.jsonl"))

    def done(self) -> set[tuple[str, str]]:
        return {(r["id"], r["intervention"]) for f in self._files() for r in read_records(f)}

    def append(self, records: list[dict]) -> None:
        with self.own.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())

    def merge(self) -> list[dict]:
        """Fold rank files into the main file (rank 0, after a barrier); return every record."""
        records = read_records(self.path)
        seen = {(r["id"], r["intervention"]) for r in records}
        extra = []
        for rank_file in self._files()[1:]:
            for record in read_records(rank_file):
                if (record["id"], record["intervention"]) not in seen:
                    seen.add((record["id"], record["intervention"]))
                    extra.append(record)
        if extra:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(r) + "\n" for r in extra))
                handle.flush()
                os.fsync(handle.fileno())
        for rank_file in self._files()[1:]:
            rank_file.unlink()
        return records + extra


def check_settings(out: Path, settings: dict) -> None:
    """A run folder belongs to one set of settings; resuming with others would mix results."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if changed:
            raise VflError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                           "use another --out, or delete the folder to start over")
    elif rank_and_world()[0] == 0:
        path.write_text(json.dumps(settings, indent=2) + "\n")


def run(out: Path, name: str, items: list, item_id: Callable, names: list[str],
        work: Callable[[object, list[str]], Iterable[dict]], desc: str) -> list[dict] | None:
    """Do ``work(item, missing_names)`` for every item this rank owns that still lacks records, and
    return all records (on rank 0; None on other ranks). ``work`` yields one record per missing name."""
    log = ResultLog(out, name)
    rank, world = log.rank, log.world
    done = log.done()
    mine = [item for i, item in enumerate(items) if i % world == rank]
    todo = [(item, [n for n in names if (item_id(item), n) not in done]) for item in mine]
    todo = [(item, missing) for item, missing in todo if missing]
    total = sum(len(missing) for _, missing in todo)
    with tqdm(total=total, desc=desc, unit="run", disable=rank != 0 or total == 0, dynamic_ncols=True) as bar:
        for item, missing in todo:
            records = list(work(item, missing))
            log.append(records)
            bar.update(len(records))
    barrier()
    if rank != 0:
        return None
    return log.merge()
