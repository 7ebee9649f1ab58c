"""tools/gpu_kit.py carries wheels to a GPU machine in pieces and results back: every piece fits its limit, the
pieces join to what was cut (or name what is missing or damaged), the wheels install, and results come back
whole, smallest files first, with what did not fit listed."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gpu_kit  # noqa: E402


def wheel(folder: Path, name: str, payload: bytes) -> Path:
    """A minimal pure-Python wheel that pip installs: package ``name`` holding ``payload``."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "PAYLOAD = __file__\n")
        archive.writestr(f"{name}/payload.bin", payload)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        archive.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def kit(tmp_path, monkeypatch):
    """A kit of two wheels (about 700 KB, payloads that do not compress) cut into 256 KiB pieces."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = [wheel(wheels, "kit_alpha", bytes(range(256)) * 2000), wheel(wheels, "kit_beta", os.urandom(200_000))]
    monkeypatch.setattr(gpu_kit, "download", lambda folder: made)
    monkeypatch.setattr(gpu_kit, "MIN_PIECE", 1024)
    monkeypatch.setattr(gpu_kit, "tree_size", lambda root: gpu_kit.TREE_LIMIT - 256 * 1024 - 2 * gpu_kit.MiB)
    return gpu_kit.pack(tmp_path / ".kit", ROOT)


def test_pieces_fit_and_only_a_whole_checked_kit_installs(kit, tmp_path):
    assert len(kit) >= 3 and [f.name for f in kit] == [str(k) for k in range(1, len(kit) + 1)]
    for folder in kit:
        piece, = folder.glob("kit.tar.*")
        assert piece.stat().st_size <= 256 * 1024 and (folder / "manifest.json").is_file()
    there = tmp_path / "there"
    for folder in kit[:-1]:  # every call but the last
        gpu_kit.stage(folder, there)
    with pytest.raises(gpu_kit.KitError, match=f"lacks kit.tar.{len(kit)} of {len(kit)} pieces"):
        gpu_kit.unpack(there)
    gpu_kit.stage(kit[-1], there)
    first = there / "kit.tar.1"
    good = first.read_bytes()
    first.write_bytes(b"x" + good[1:])
    with pytest.raises(gpu_kit.KitError, match="kit.tar.1 is damaged"):
        gpu_kit.unpack(there)
    first.write_bytes(good)
    site = gpu_kit.unpack(there)
    found = subprocess.run([sys.executable, "-c", "import kit_alpha, kit_beta; print(kit_beta.PAYLOAD)"],
                           env={"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.startswith(str(site)), found.stderr
    assert gpu_kit.unpack(there) == site  # installed once: a second call finds it done


def test_results_come_back_whole_smallest_first_and_say_what_was_left(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_kit, "BACK_PIECE", 80 * 1024)
    monkeypatch.setattr(gpu_kit, "BACK_TOTAL", 1 * gpu_kit.MiB + 300 * 1024)
    run = tmp_path / "runs" / "recipes"
    files = {"results.jsonl": b'{"recipe": "lora"}\n', "lora/weights/lora.safetensors": bytes(200 * 1024),
             "lora/checkpoint.pt": b"state", "calibration/lora/timing.json": b"{}",
             "projector/weights/projector.safetensors": bytes(100 * 1024), "big/too_big.bin": bytes(400 * 1024)}
    for name, data in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    out = tmp_path / "out"
    pieces, left = gpu_kit.send(run, out, ["*checkpoint.pt", "calibration/*"], other_files=2)
    assert left == ["big/too_big.bin"]  # the largest file that did not fit; the smaller ones did
    assert 1 < len(pieces) <= gpu_kit.BACK_FILES - 1 - 2
    assert all(p.stat().st_size <= 80 * 1024 for p in pieces)
    assert len(list(out.iterdir())) == len(pieces) + 1  # the pieces and their manifest, results.json
    here = tmp_path / "here"
    assert gpu_kit.receive(out, here) == ["big/too_big.bin"]
    back = {p.relative_to(here).as_posix(): p.read_bytes() for p in here.rglob("*") if p.is_file()}
    assert back == {k: v for k, v in files.items() if k in ("results.jsonl", "lora/weights/lora.safetensors",
                                                             "projector/weights/projector.safetensors")}
    with pytest.raises(gpu_kit.KitError, match="holds no results.json"):
        gpu_kit.receive(tmp_path / "runs", here)


def test_the_command_line_says_what_is_wrong_in_one_sentence(tmp_path):
    for args, message in [(["stage", str(tmp_path)], "holds no kit piece"),
                          (["unpack", "--kit", str(tmp_path)], "no kit is staged"),
                          (["receive", str(tmp_path), str(tmp_path / "x")], "holds no results.json")]:
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_kit.py"), *args], capture_output=True,
                                text=True)
        assert result.returncode == 2 and result.stderr.startswith("gpu_kit.py: error: "), result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1


def test_the_manifest_names_every_wheel_and_the_pieces_in_order(kit):
    manifest = json.loads((kit[0] / "manifest.json").read_text())
    assert manifest["wheels"] == ["kit_alpha-0.1-py3-none-any.whl", "kit_beta-0.1-py3-none-any.whl"]
    assert [p["file"] for p in manifest["pieces"]] == [f"kit.tar.{k}" for k in range(1, len(kit) + 1)]
    assert sum(p["bytes"] for p in manifest["pieces"]) == manifest["bytes"]
