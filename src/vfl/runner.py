"""Resumable, shardable runs: an append-only JSONL of records keyed by (item, intervention).

A run folder belongs to one process and one set of settings: `claim` locks it (a second process is
refused) and refuses other settings before anything is written. A killed run loses at most the line
being written (it is cut off on the next start) and a rerun skips every key already on disk, so no
record is lost or written twice; records are unique by key whatever a file holds (the first one wins).
Under `torchrun` / `accelerate launch` each rank takes every world-th item and appends to its own file;
rank 0 holds the lock and folds the rank files in at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from vfl.errors import VflError

LOCK = ".vfl.lock"
# run settings that name the inputs' content (`vfl.fingerprint`), and how a refusal names them
INPUTS = {"probes_sha256": "the probes or their images", "data_sha256": "the data or its images",
          "model_path": "the model", "model_sha256": "the model"}
_HELD: dict[Path, dict] = {}  # run folders this process has claimed -> their settings


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    _, world = rank_and_world()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()


def key(record: dict) -> tuple[str, str]:
    return record["id"], record["intervention"]


def unique(records: Iterable[dict]) -> list[dict]:
    """The first record of every (id, intervention) key, in file order."""
    seen, kept = set(), []
    for record in records:
        if key(record) not in seen:
            seen.add(key(record))
            kept.append(record)
    return kept


def read_records(path: Path, repair: bool = True) -> list[dict]:
    """Records of a results file; a torn last line (a killed write) is cut off the file (``repair``) or, for a
    reader that must not write (`vfl compare`), only skipped."""
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
            if repair:
                with path.open("r+b") as handle:
                    handle.truncate(offset)
            break
        offset += len(line)
    return records


def _write_lines(path: Path, records: list[dict], mode: str) -> None:
    with path.open(mode, encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())


def replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """``write(side_file)``, then the side file renamed over ``path``: a reader or a kill sees the old file or the
    new, never half of one."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Write a whole text file so that a reader or a kill never sees half of it."""
    replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fresh_folder(target: Path, clear: bool = True) -> Path:
    """The folder beside ``target`` to fill and then `swap_in`, cleared of any earlier attempt (by one process of
    several that fill it together: ``clear`` on that one only)."""
    fresh = Path(target).with_name(Path(target).name + ".new")
    if clear:
        shutil.rmtree(fresh, ignore_errors=True)
    return fresh


def swap_in(fresh: Path, target: Path) -> None:
    """Replace the folder ``target`` by ``fresh`` with two renames; a kill between them leaves the old one as
    ``target.old``, which `swapped_in` finds. Checkpoints and weights a run rewrites as it goes use it."""
    target = Path(target)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def swapped_in(target: Path) -> Path:
    """``target``, or its old copy where a kill fell between `swap_in`'s two renames."""
    target = Path(target)
    old = target.with_name(target.name + ".old")
    return old if not target.exists() and old.is_dir() else target


class ResultLog:
    """The results file of one run folder (``name``), plus the per-rank files of a sharded run."""

    def __init__(self, out: Path, name: str):
        self.out, self.name = Path(out), name
        self.rank, self.world = rank_and_world()
        self.path = self.out / name
        self.own = self.path if self.world == 1 else self.out / f"{Path(name).stem}.rank{self.rank}.jsonl"

    def _files(self) -> list[Path]:
        return [self.path] + sorted(self.out.glob(f"{Path(self.name).stem}.rank*.jsonl"))

    def compact(self) -> None:
        """Rewrite the main file without repeated keys (files written before runs were locked could hold them)."""
        records = read_records(self.path)
        kept = unique(records)
        if len(kept) < len(records):
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def done(self) -> set[tuple[str, str]]:
        return {key(r) for f in self._files() for r in read_records(f)}

    def append(self, records: list[dict]) -> None:
        _write_lines(self.own, records, "a")

    def merge(self) -> list[dict]:
        """Fold rank files into the main file (rank 0, after a barrier); return every record, once each."""
        records = unique(read_records(self.path))
        seen = {key(r) for r in records}
        extra = unique(r for rank_file in self._files()[1:] for r in read_records(rank_file) if key(r) not in seen)
        if extra:
            _write_lines(self.path, extra, "a")
        for rank_file in self._files()[1:]:
            rank_file.unlink()
        return records + extra


def check_settings(out: Path, settings: dict) -> None:
    """Refuse, before any work, a run folder that holds a run with other settings or inputs."""
    path = Path(out) / "run.json"
    if path.is_file():
        refuse_other_settings(out, read_settings(path), json.loads(json.dumps(settings)))


def read_settings(path: Path) -> dict:
    """A run folder's recorded settings (JSON), or one sentence where the file is damaged."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        raise VflError(f"{path} cannot be read; delete the folder to start over") from None


def refuse_other_settings(out: Path, previous: dict, settings: dict, what: str = "run") -> None:
    """Refuse a folder whose recorded settings differ from these, naming the ones that do, or the inputs that
    changed (`vfl.fingerprint`): a rerun must resume the same work, never mix two. A run recorded before runs
    recorded their inputs' content cannot be checked for it, and still resumes."""
    settings = {k: v for k, v in settings.items() if k not in INPUTS or k in previous}
    changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    named = [k for k in changed if k not in INPUTS]  # other settings draw other inputs: name the settings
    if named:
        raise VflError(f"{out} holds a {what} with other settings ({', '.join(named)}); "
                       "use another --out, or delete the folder to start over")
    if changed:
        inputs = ", ".join(dict.fromkeys(INPUTS[k] for k in changed))
        raise VflError(f"{out} holds a {what} on other inputs ({inputs} changed since); "
                       "use another --out, or delete the folder to start over")


@contextmanager
def claim(out: Path, settings: dict):
    """Own the run folder ``out`` for the block: refuse other settings and other processes before anything
    is written, then record the settings in ``run.json``. Re-entrant within one process (the CLI claims
    the folder before writing probes into it, the analysis claims it again)."""
    settings = json.loads(json.dumps(settings))  # compare as run.json will hold them
    out = Path(out).resolve()
    if out in _HELD:
        if _HELD[out] != settings:
            raise VflError(f"{out} is already in use by this process with other settings")
        yield out
        return
    check_settings(out, settings)
    if rank_and_world()[0] != 0:  # rank 0 holds the lock and writes; the others only read
        _HELD[out] = settings
        try:
            yield out
        finally:
            del _HELD[out]
        return
    if out.exists() and not out.is_dir():
        raise VflError(f"{out} is a file, not a run folder")
    lock_path = out / LOCK
    try:
        if lock_path.exists():
            handle = lock_path.open("r+")
        else:
            out.mkdir(parents=True, exist_ok=True)
            handle = lock_path.open("a+")
    except OSError as err:  # a read-only folder or disk, a parent that is a file
        raise VflError(f"cannot write the run folder {out} ({err.strerror or err}); choose another --out") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise VflError(f"{out} is in use by another vfl process (pid {holder}); wait for it to finish "
                           "or use another --out") from None
        check_settings(out, settings)  # again, now that nobody else can write it
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        if not (out / "run.json").exists():
            write_atomic(out / "run.json", json.dumps(settings, indent=2) + "\n")
        _HELD[out] = settings
        try:
            yield out
        finally:
            del _HELD[out]
    finally:
        handle.close()  # closing the file releases the lock


def run(out: Path | None, name: str, items: list, item_id: Callable, names: list[str],
        work: Callable[[object, list[str]], Iterable[dict]], desc: str) -> list[dict] | None:
    """Do ``work(item, missing_names)`` for every item this rank owns that still lacks records, and
    return all records (on rank 0; None on other ranks). ``work`` yields one record per missing name.
    ``out`` None keeps everything in memory (no file, no resume)."""
    if out is None:
        records = []
        with tqdm(total=len(items) * len(names), desc=desc, unit="run", dynamic_ncols=True) as bar:
            for item in items:
                records += list(work(item, list(names)))
                bar.update(len(names))
        return records
    log = ResultLog(out, name)
    rank, world = log.rank, log.world
    if rank == 0:
        log.compact()
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
