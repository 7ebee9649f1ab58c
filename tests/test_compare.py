"""`vfl compare` on fabricated summaries: depth normalisation, order against the paper's, outputs."""

import json

from conftest import run_cli, write_locate_run
from vfl.compare import compare


def summary(num_layers, window, vfls, classes=None):
    classes = classes or {}
    return {"model": f"m{num_layers}", "num_layers": num_layers, "window": window,
            "functions": {f: {"vfl": layers, "class": classes.get(f, "localized" if layers else "distributed")}
                          for f, layers in vfls.items()}}


def test_bands_are_normalised_and_the_order_is_judged(tmp_path):
    paper_like = tmp_path / "a.json"
    paper_like.write_text(json.dumps(summary(28, 1, {"recog": [2, 3, 4], "count": [12], "ground": [18],
                                                     "ocr": [22, 23]})))
    shuffled = tmp_path / "b"
    shuffled.mkdir()
    (shuffled / "summary.json").write_text(json.dumps(summary(30, 4, {"count": [20, 21, 22, 23, 24],
                                                                      "ground": [8, 9, 10, 11], "ocr": []},
                                                                     {"ocr": "not read"})))
    result = compare([paper_like, shuffled], ["paper", "other"])
    first, second = result["runs"]
    assert first["functions"]["count"]["depth"] == [12 / 28, 13 / 28]
    assert first["order"] == ["recog", "count", "ground", "ocr"] and first["paper_order"] == "matches"
    assert second["order"] == ["ground", "count"] and second["paper_order"] == "differs"
    assert second["functions"]["ocr"]["class"] == "not read"
    single = tmp_path / "c.json"
    single.write_text(json.dumps(summary(30, 1, {"count": [5], "ocr": []})))
    assert compare([single])["runs"][0]["paper_order"] == "not testable"

    out = tmp_path / "out"
    cli = run_cli("compare", paper_like, shuffled, "--names", "paper,other", "--out", out)
    assert cli.returncode == 0, cli.stderr
    assert {"compare.json", "compare.md", "compare.png"} <= {p.name for p in out.iterdir()}
    text = (out / "compare.md").read_text()
    assert "| paper | 28 | 1 | layers 2-4 (0.07-0.18) |" in text and "| matches |" in text and "not read" in text


def test_bad_inputs_are_one_sentence(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    result = run_cli("compare", tmp_path / "x.json", "--out", tmp_path / "out")
    assert result.returncode == 2 and "is not a vfl locate summary" in result.stderr
    result = run_cli("compare", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_cli("compare", tmp_path / "x.json", "--names", "a,b", "--out", tmp_path / "out")
    assert result.returncode == 2 and "gives 2 names for 1 runs" in result.stderr


def test_the_papers_reported_positions_come_first_marked_as_reported(tmp_path):
    run = tmp_path / "a.json"
    run.write_text(json.dumps(summary(30, 3, {"recog": [3, 4, 5], "count": [], "ground": [21, 22, 23]},
                                          {"count": "distributed"})))
    first, mine = compare([run], ["nano"], paper=True)["runs"]
    assert first["reported"] and first["num_layers"] == 28 and "reported" not in mine
    assert first["functions"]["count"]["depth"] == [12 / 28, 13 / 28] and first["functions"]["recog"]["vfl"][-1] == 10
    assert first["order"] == ["recog", "count", "ground", "ocr"] and first["paper_order"] == "matches"
    out = tmp_path / "out"
    cli = run_cli("compare", run, "--names", "nano", "--paper", "--out", out)
    assert cli.returncode == 0, cli.stderr
    text = (out / "compare.md").read_text()
    assert "| Qwen2.5-VL-7B (paper, reported) | 28 | – | layers 0-10 (0.00-0.39) |" in text
    assert "not measured here" in text
    assert "| nano | 30 | 3 | layers 3-5 (0.10-0.20) | distributed |" in text
    plain = run_cli("compare", run, "--out", tmp_path / "plain")
    assert "not measured here" not in (tmp_path / "plain" / "compare.md").read_text() and plain.returncode == 0


def test_the_read_profile_places_a_band_and_a_function_read_across_the_depth(tmp_path):
    """The score-weighted centre and spread of a sliding-window run's windows: a narrow peak sits where its
    band is, with a small spread; a function scored evenly over the depth has its centre mid-way and a wide
    spread; cumulative sweeps get none (their windows overlap by design)."""
    def windows(scores):
        return [{"layers": [k, k + 1], "score_mean": s} for k, s in enumerate(scores)]

    run = summary(10, 2, {"ground": [6, 7], "count": []}, {"count": "distributed"})
    run["sweep"] = "window"
    run["functions"]["ground"]["layers"] = windows([0, 0, 0, 0, 0, -0.1, 1.0, 0, 0])  # negatives weigh nothing
    run["functions"]["count"]["layers"] = windows([0.5] * 9)
    (tmp_path / "a.json").write_text(json.dumps(run))
    entries = compare([tmp_path / "a.json"], ["a"])["runs"][0]["functions"]
    assert entries["ground"]["profile"] == {"centre": 0.7, "spread": 0.0}
    assert entries["count"]["profile"]["centre"] == 0.5 and 0.25 < entries["count"]["profile"]["spread"] < 0.27
    run["functions"]["ocr"] = {"vfl": [], "class": "model fails", "layers": windows([0.3] * 9)}
    (tmp_path / "a.json").write_text(json.dumps(run))
    assert "profile" not in compare([tmp_path / "a.json"])["runs"][0]["functions"]["ocr"]  # noise, not a profile
    run["sweep"] = "upto"
    (tmp_path / "b.json").write_text(json.dumps(run))
    assert "profile" not in compare([tmp_path / "b.json"])["runs"][0]["functions"]["count"]
    out = tmp_path / "out"
    cli = run_cli("compare", tmp_path / "a.json", tmp_path / "b.json", "--names", "window,upto", "--out", out)
    assert cli.returncode == 0, cli.stderr
    text = (out / "compare.md").read_text()
    page = (out / "report.html").read_text()
    assert "Read-profile centre, run x function" in page and 'title="window, grounding: 0.70"' in page
    assert "| window | 0.50 ± 0.26 | 0.70 ± 0.00 |" in text and "| upto | – | – |" in text and "OCR" not in text.split("Read profiles")[1].split("\n\n")[1]


def test_read_profile_intervals_come_from_a_runs_records_by_a_seeded_bootstrap(tmp_path):
    """From a run folder's results.jsonl: the bootstrap draws are deterministic, their 95% interval holds the
    summary's point estimate, and a run read in one place has a narrower spread interval than one read in two."""
    from vfl.compare import profile_draws, run_records

    write_locate_run(tmp_path / "one", {"ground": {6}})
    write_locate_run(tmp_path / "two", {"ground": {1, 7}})
    with (tmp_path / "one" / "results.jsonl").open("a") as f:
        f.write('{"torn": ')  # a killed write's last line is skipped, and left where it is
    records = run_records(tmp_path / "one")
    assert (profile_draws(records, 10)["ground"] == profile_draws(records, 10)["ground"]).all()
    one, two = (row["functions"]["ground"]["profile"] for row in compare([tmp_path / "one", tmp_path / "two"])["runs"])
    for profile in (one, two):
        assert profile["centre_ci"][0] <= profile["centre"] <= profile["centre_ci"][1]
        assert profile["spread_ci"][0] <= profile["spread"] <= profile["spread_ci"][1]
    assert 0.65 < one["centre"] < 0.75 and one["spread_ci"][1] < two["spread_ci"][0]
    assert "centre_ci" not in compare([tmp_path / "one" / "summary.json"])["runs"][0]["functions"]["ground"]["profile"]
    assert (tmp_path / "one" / "results.jsonl").read_text().endswith('{"torn": ')
    text = (tmp_path / "two" / "results.jsonl").read_text().splitlines()
    (tmp_path / "two" / "results.jsonl").write_text("\n".join(text[:5] + ["{not json"] + text[5:]) + "\n")
    refused = run_cli("compare", tmp_path / "one", tmp_path / "two", "--out", tmp_path / "out")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == \
        f"vfl: error: {tmp_path / 'two' / 'results.jsonl'} is corrupt at byte {sum(len(t) + 1 for t in text[:5])}; " \
        "move it away to start this run afresh"
