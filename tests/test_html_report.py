"""report.html: written by every locate, drop and compare run; self-contained; opened in a real headless browser
where one is installed (Chromium from Debian's packages), with no console error."""

import re
import shutil
import subprocess

import pytest

import vfl
from vfl.compare import compare, write


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llava_dir):
    folder = tmp_path_factory.mktemp("html")
    adapter = vfl.load(str(tiny_llava_dir))
    probes = vfl.make_probes(["count", "ocr"], n=2, size=32, seed=0)
    vfl.locate(adapter, probes=probes, window=2, out=folder / "locate", max_new_tokens=3)
    vfl.drop(adapter, probes=probes, out=folder / "drop", max_new_tokens=3)
    write(compare([folder / "locate", folder / "locate"], ["one", "two"]), folder / "compare")
    return folder


def self_contained(page: str) -> bool:
    """No address a browser would fetch: every src and href is a data URI or a fragment."""
    return not [u for u in re.findall(r'(?:src|href)="([^"]*)"', page) if not u.startswith(("data:", "#"))]


def test_locate_writes_a_heatmap_curves_and_one_row_per_probe(runs):
    page = (runs / "locate" / "report.html").read_text()
    assert self_contained(page) and page.startswith("<!doctype html>")
    heat = re.search(r'<table class="heat">(.*?)</table>', page).group(1)
    assert heat.count("<tr>") == 1 + 2  # the head, counting and OCR
    assert heat.count("<td ") == 2 * 5  # windows of 2 over a 6-layer model: k = 0..4
    rows = re.findall(r'<tr data-f="(\w+)" data-o="(\w+)">', page)
    assert sorted(f for f, _ in rows) == ["count", "count", "ocr", "ocr"]
    assert {o for _, o in rows} <= {"transferred", "changed", "unchanged"}
    assert page.count('src="data:image/png;base64,') == 2 * 4 + 1  # A and B of every probe, and curves.png
    assert page.count('<td class="ans') == 4 * (2 + 5)  # the controls and every window, per probe


def test_drop_writes_accuracy_per_layers_dropped_and_one_row_per_image(runs):
    page = (runs / "drop" / "report.html").read_text()
    assert self_contained(page)
    heat = re.search(r'<table class="heat">(.*?)</table>', page).group(1)
    assert heat.count("<td ") == 2 * 7  # N = 0..6 dropped
    rows = re.findall(r'<tr data-f="(\w+)" data-o="(\w+)">', page)
    assert len(rows) == 8 and {o for _, o in rows} <= {"kept", "lost", "wrong"}


def test_compare_writes_one_too(runs):
    page = (runs / "compare" / "report.html").read_text()
    assert self_contained(page) and "Band centre, run x function" in page
    assert page.count("<td>one</td>") == page.count("<td>two</td>") == 1


BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (apt-get install chromium)")
@pytest.mark.parametrize("run", ["locate", "drop", "compare"])
def test_the_report_opens_in_headless_chromium_without_a_console_error(runs, run, tmp_path):
    page = runs / run / "report.html"
    shot = tmp_path / "shot.png"
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000", "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert '<table class="heat">' in dom.stdout and "</html>" in dom.stdout
    snapped = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert snapped.returncode == 0 and shot.stat().st_size > 10_000, snapped.stderr[-2000:]
