"""report.html: one self-contained page per run (no network, no CDN) to look at rather than read.

A layer x function heatmap of transfer rates (locate) or accuracies (drop), the run's plot, and a per-probe
table with A/B thumbnails and the answer at every window, sortable by any column and filtered by function and
outcome. Images are embedded as data URIs; the few lines of script are inline.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from vfl.decision import NAMES

THUMB = 96  # px, the longer side of a probe's thumbnails

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:3px 6px;text-align:center}
th{background:#f4f4f4;cursor:pointer} .heat td{min-width:2.6em;font-size:12px}
.probes td.q{text-align:left;min-width:14em;max-width:24em} .ans{font-size:11px;white-space:nowrap}
.t{background:#2e7d32;color:#fff} .c{background:#f9a825} .s{background:#eee}
img{display:block;margin:auto} .controls{margin:.6em 0} .muted{color:#777}
"""

SCRIPT = """
function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
 asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';const b=t.tBodies[0];
 [...b.rows].sort((x,y)=>{const p=x.cells[i].dataset.v??x.cells[i].textContent,q=y.cells[i].dataset.v??y.cells[i].textContent;
 const n=parseFloat(p)-parseFloat(q);return (isNaN(n)?p.localeCompare(q):n)*(asc?1:-1)}).forEach(r=>b.appendChild(r))}
function filter(){const f=document.getElementById('fn').value,o=document.getElementById('out').value;let n=0;
 for(const r of document.querySelectorAll('#probes tbody tr')){const s=(!f||r.dataset.f===f)&&(!o||r.dataset.o===o);
 r.style.display=s?'':'none';n+=s}document.getElementById('shown').textContent=n}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
"""


def _e(text) -> str:
    return html.escape(str(text))


def data_uri(image, size: int = THUMB) -> str:
    """A PIL image as an embedded PNG, its longer side at most ``size`` px."""
    image = image.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else None


def _colour(value: float | None) -> str:
    """White to dark blue over 0-1; grey where there is no value."""
    if value is None:
        return "background:#f4f4f4"
    level = max(0.0, min(1.0, value))
    shade = round(255 - 200 * level)
    return f"background:rgb({shade},{round(255 - 150 * level)},255);color:{'#fff' if level > 0.6 else '#222'}"


def heatmap(title: str, columns: list[str], rows: dict[str, list[float | None]], marked=None) -> str:
    """A table of coloured cells: one row per function, one column per layer window (``marked``: {row: set of
    column indices} outlined, e.g. the VFL band)."""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for name, values in rows.items():
        cells = []
        for k, value in enumerate(values):
            outline = ";outline:2px solid #c62828;outline-offset:-2px" if marked and k in marked.get(name, ()) else ""
            text = "" if value is None else f"{value:.2f}"
            cells.append(f'<td style="{_colour(value)}{outline}" title="{_e(name)}, {_e(columns[k])}: {text}">{text}</td>')
        body.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    return f'<h2>{_e(title)}</h2><table class="heat"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def page(title: str, parts: list[str]) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(parts)}"
            f"<script>{SCRIPT}</script></body></html>\n")


def _probe_table(rows: list[dict], columns: list[str], functions: list[str], outcomes: list[str]) -> str:
    """The per-probe table: each row a dict with id, function, outcome, question, images and answer cells."""
    def options(values):
        return "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)

    controls = (f'<div class="controls">function <select id="fn" onchange="filter()"><option value="">all</option>'
                f'{options(functions)}</select> outcome <select id="out" onchange="filter()"><option value="">all'
                f'</option>{options(outcomes)}</select> <span id="shown">{len(rows)}</span> shown</div>')
    head = "".join(f"<th>{_e(c)}</th>" for c in ["probe", "function", "outcome", "question", "A", "B", "targets"]
                   + columns)
    body = []
    for row in rows:
        answers = "".join(f'<td class="ans {cls}" title="{_e(text)}">{_e(text[:14])}</td>' for text, cls in row["answers"])
        body.append(f'<tr data-f="{_e(row["function"])}" data-o="{_e(row["outcome"])}"><td>{_e(row["id"])}</td>'
                    f'<td>{_e(row["function"])}</td><td data-v="{_e(row["outcome"])}">{_e(row["outcome"])}</td>'
                    f'<td class="q">{_e(row["question"])}</td><td><img src="{row["image_a"]}" alt="A"></td>'
                    f'<td><img src="{row["image_b"]}" alt="B"></td><td>{_e(row["targets"])}</td>{answers}</tr>')
    return (f"<h2>Per probe</h2>{controls}<table class=\"probes\" id=\"probes\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


LEGEND = ('<p class="muted">Answer cells: <span class="t">&nbsp;B\'s answer&nbsp;</span> '
          '<span class="c">&nbsp;changed, not B\'s&nbsp;</span> <span class="s">&nbsp;A\'s answer&nbsp;</span>. '
          "Click a column's head to sort by it.</p>")


def locate_page(summary: dict, records: list[dict], probes: list, folder: Path | None = None) -> str:
    """report.html of a `vfl locate` run (``folder``: where its curves.png is)."""
    functions = list(summary["functions"])
    first = summary["functions"][functions[0]]["layers"] if functions else []
    labels = [row["label"] for row in first]
    rates = {NAMES[f]: [row["transfer_rate"] for row in summary["functions"][f]["layers"]] for f in functions}
    band = {NAMES[f]: {k for k, row in enumerate(summary["functions"][f]["layers"])
                       if row["layer"] in summary["functions"][f]["vfl_windows"]} for f in functions}
    parts = [f'<p>{summary["num_layers"]} decoder layers; {len(probes)} probes. Cells: the share of probes whose '
             "answer turned to image B's when that window was swapped; outlined: the VFL band (the test in "
             "report.md).</p>", heatmap("Transfer rate, layer window x function", labels, rates, band)]
    curves = file_uri(folder / "curves.png") if folder else None
    if curves:
        parts.append(f'<h2>Curves</h2><img src="{curves}" alt="curves" style="max-width:100%">')
    by_probe: dict[str, dict] = {}
    for record in records:  # the controls by name, the swept windows by their k
        key = record["intervention"] if record["layer"] is None else record["layer"]
        by_probe.setdefault(record["id"], {})[key] = record
    keys = ["none", "all"] + [row["layer"] for row in first]
    rows = []
    for probe in probes:
        mine = by_probe.get(probe.id, {})
        answers = [(r["answer"], "t" if r["transferred"] else "c" if r["changed"] else "s")
                   for r in (mine.get(key) for key in keys) if r is not None]
        swept = [r for key, r in mine.items() if key not in ("none", "all")]
        outcome = ("transferred" if any(r["transferred"] for r in swept) else
                   "changed" if any(r["changed"] for r in swept) else "unchanged")
        rows.append({"id": probe.id, "function": probe.function, "outcome": outcome, "question": probe.question,
                     "image_a": data_uri(probe.image("a")), "image_b": data_uri(probe.image("b")),
                     "targets": f"{probe.answer_a} / {probe.answer_b}", "answers": answers})
    parts += [LEGEND, _probe_table(rows, ["none", "all"] + labels, functions, ["transferred", "changed", "unchanged"])]
    return page(f"Vision Function Layers of {summary['model']}", parts)


def drop_page(summary: dict, records: list[dict], probes: list, folder: Path | None = None) -> str:
    """report.html of a `vfl drop` run (``folder``: where its drop.png is)."""
    functions = list(summary["functions"])
    columns = [str(point["dropped"]) for point in summary["functions"][functions[0]]["curve"]] if functions else []
    accuracy = {NAMES[f]: [p["accuracy"] if p["n"] else None for p in summary["functions"][f]["curve"]]
                for f in functions}
    parts = [f"<p>{summary['num_layers']} decoder layers; both images of {len(probes)} probes. Cells: accuracy with "
             "the visual keys and values dropped from the last N layers (N in the columns).</p>",
             heatmap("Accuracy, layers dropped x function", columns, accuracy)]
    plot = file_uri(folder / "drop.png") if folder else None
    if plot:
        parts.append(f'<h2>Curve</h2><img src="{plot}" alt="drop curve" style="max-width:100%">')
    by_item: dict[str, dict] = {}
    for record in records:
        by_item.setdefault(record["id"], {})[record["dropped"]] = record
    rows = []
    for probe in probes:
        for which in "ab":
            mine = by_item.get(f"{probe.id}/{which}", {})
            answers = [(r["answer"], "t" if r["correct"] else "s") for _, r in sorted(mine.items())]
            lost = mine.get(0, {}).get("correct") and not all(r["correct"] for r in mine.values())
            outcome = "lost" if lost else "kept" if mine.get(0, {}).get("correct") else "wrong"
            rows.append({"id": f"{probe.id}/{which}", "function": probe.function, "outcome": outcome,
                         "question": probe.question, "image_a": data_uri(probe.image(which)),
                         "image_b": data_uri(probe.image("b" if which == "a" else "a")),
                         "targets": probe.answer_a if which == "a" else probe.answer_b, "answers": answers})
    parts += ['<p class="muted">Answer cells: <span class="t">&nbsp;right&nbsp;</span> '
              '<span class="s">&nbsp;wrong&nbsp;</span>; column N: the last N layers dropped. "A" is the image '
              "answered, \"B\" its pair's other image.</p>",
              _probe_table(rows, columns, functions, ["kept", "lost", "wrong"])]
    return page(f"Vision token dropping: {summary['model']}", parts)


def compare_page(table: list[dict], plot: Path | None) -> str:
    """report.html of `vfl compare`: each run's bands on the normalised depth axis, as a heatmap of runs x
    functions (the band's centre, 0 = first layer, 1 = last) and the plot."""
    functions = sorted({f for row in table for f in row["functions"]})
    columns = [NAMES.get(f, f) for f in functions]
    rows = {row["name"]: [row["functions"].get(f, {}).get("centre") for f in functions] for row in table}
    parts = ["<p>Each cell: where the function's VFL band sits, as its centre on the normalised depth "
             "(0 the first decoder layer, 1 the last); empty where the run localized none. The paper's order on "
             "Qwen2.5-VL-7B: recognition &lt; counting &lt; grounding &lt; OCR.</p>",
             heatmap("Band centre, run x function", columns, rows)]
    profiles = {row["name"]: [(row["functions"].get(f, {}).get("profile") or {}).get("centre") for f in functions]
                for row in table if not row.get("reported")}
    if any(v is not None for values in profiles.values() for v in values):
        parts += ["<p>Each cell: the function's read profile centre, its windows weighted by their mean normalised "
                  "score; it places functions no band holds (the spread and intervals: compare.md).</p>",
                  heatmap("Read-profile centre, run x function", columns, profiles)]
    uri = file_uri(plot) if plot else None
    if uri:
        parts.append(f'<h2>Bands</h2><img src="{uri}" alt="bands" style="max-width:100%">')
    runs = "".join(f"<tr><td>{_e(row['name'])}</td><td>{_e(row['model'])}</td><td>{row['num_layers']}</td>"
                   f"<td>{row['window']}</td><td>{_e(' < '.join(NAMES.get(f, f) for f in row['order']) or '–')}</td>"
                   f"<td>{_e(row['paper_order'])}</td></tr>" for row in table)
    parts.append("<h2>Runs</h2><table><thead><tr><th>run</th><th>model</th><th>layers</th><th>window</th>"
                 f"<th>localized, shallow to deep</th><th>the paper's order</th></tr></thead><tbody>{runs}</tbody></table>")
    return page("Vision Function Layers compared", parts)
