"""The VFL call on fabricated records: the paired test, Holm, the band, the classes, the report and plot."""

import pytest

from vfl.decision import locate_summary
from vfl.plots import plot_locate
from vfl.report import locate_report


def fabricate(function="count", n=40, transfers=None, all_layers=30, none=0, correct=None, num_layers=30, window=1):
    """Records of one function: ``transfers[k]`` probes transfer at window k (the first ones by id), the
    no-swap control transfers ``none`` probes and the all-layer control ``all_layers``."""
    transfers = transfers or {}
    correct = n if correct is None else correct
    records = []

    def add(name, layer, layers, hits):
        for i in range(n):
            records.append({"id": f"{function}-{i:03d}", "function": function, "intervention": name, "layer": layer,
                            "layers": layers, "transferred": i < hits, "changed": i < hits, "correct_a": i < correct})

    add("none", None, [], none)
    add("all", None, list(range(num_layers)), all_layers)
    for k in range(num_layers - window + 1):
        add(f"layer {k}", k, list(range(k, k + window)), transfers.get(k, 0))
    return records


def test_one_transfer_in_forty_is_no_vfl():
    summary = locate_summary(fabricate(transfers={20: 1}), "m", 30, 1)
    data = summary["functions"]["count"]
    assert data["vfl"] == [] and data["peak"] is None and data["class"] == "distributed"
    row = data["layers"][20]
    assert row["gains"] == 1 and row["losses"] == 0 and row["p_value"] == 0.5 and not row["passes"]


def test_a_strong_band_is_localized_with_p_values_recorded():
    summary = locate_summary(fabricate(transfers={11: 12, 12: 20, 13: 14, 14: 3}), "m", 30, 1)
    data = summary["functions"]["count"]
    assert data["class"] == "localized"
    assert data["peak"] == 12 and data["vfl"] == [11, 12, 13] and data["vfl_windows"] == [11, 12, 13]
    rows = {r["layer"]: r for r in data["layers"]}
    assert rows[12]["p_value"] == pytest.approx(0.5 ** 20)
    assert rows[12]["p_holm"] == pytest.approx(30 * 0.5 ** 20)  # the smallest of 30 p-values: times 30
    assert all(r["p_holm"] >= r["p_value"] for r in rows.values())
    assert not rows[14]["passes"]  # 3 of 40 does not survive 30 tests
    assert summary["test"]["alpha"] == 0.05 and "McNemar" in summary["test"]["method"]


def test_the_minimum_effect_rejects_a_significant_but_tiny_gain():
    records = fabricate(n=400, transfers={5: 30}, all_layers=300)  # p tiny, effect 0.075
    assert locate_summary(records, "m", 30, 1)["functions"]["count"]["vfl"] == []
    assert locate_summary(records, "m", 30, 1, min_effect=0.05)["functions"]["count"]["vfl"] == [5]


def test_windows_are_compared_with_the_control_on_the_same_probes():
    """The control's transfers are probes 0-9; a window that transfers the same ten gains nothing."""
    records = fabricate(transfers={4: 10}, none=10)
    row = locate_summary(records, "m", 30, 1)["functions"]["count"]["layers"][4]
    assert row["gains"] == 0 and row["p_value"] == 1.0 and not row["passes"]


@pytest.mark.parametrize("case, kwargs, expected", [
    ("localized", dict(transfers={7: 25}), "localized"),
    ("distributed", dict(transfers={7: 3}), "distributed"),
    ("not read", dict(all_layers=2), "not read"),
    ("model fails", dict(transfers={7: 25}, correct=10), "model fails"),
])
def test_classes(case, kwargs, expected):
    data = locate_summary(fabricate(**kwargs), "m", 30, 1)["functions"]["count"]
    assert data["class"] == expected
    assert data["verdict"].startswith(expected + ":")


def test_cumulative_sweeps_report_where_reading_ends():
    records = fabricate(transfers={k: 30 if k <= 18 else 0 for k in range(30)})
    for record in records:
        if record["layer"] is not None:
            k = record["layer"]
            record.update(intervention=f"from {k}", layers=list(range(k, 30)))
    data = locate_summary(records, "m", 30, 1, sweep="from")["functions"]["count"]
    assert data["class"] == "read" and data["vfl"] == []
    assert "k up to 18" in data["verdict"]


def test_report_names_windows_by_their_span():
    summary = locate_summary(fabricate(transfers={20: 20, 21: 18}, window=4), "m", 30, 4)
    data = summary["functions"]["count"]
    assert data["vfl"] == list(range(20, 25)) and data["layers"][20]["label"] == "20-23"
    text = locate_report(summary)
    assert "| layers 20-23 |" in text and "| layers 20-24 |" in text and "localized: layers 20-24" in text


def test_the_plot_circles_the_vfl_windows_and_draws_the_controls():
    records = fabricate(transfers={20: 20, 21: 18}, window=4) + fabricate("ocr", all_layers=2, window=4)
    for record in records:  # scores for the right panel
        record["score"] = 0.5 if record["transferred"] else 0.0
    summary = locate_summary(records, "m", 30, 4)
    figure = plot_locate(summary)
    rate_axis, score_axis = figure.axes
    circles = [line for line in rate_axis.lines if line.get_markerfacecolor() == "none" and len(line.get_xdata())]
    assert sorted(x for line in circles for x in line.get_xdata()) == [20, 21]
    assert sorted(y for line in circles for y in line.get_ydata()) == [0.45, 0.5]
    horizontal = [line for line in rate_axis.lines if len(set(line.get_ydata())) == 1 and len(line.get_xdata()) == 2]
    assert len(horizontal) == 4  # no swap and all layers, for each of the two functions
    labels = [t.get_text() for t in rate_axis.get_xticklabels()]
    assert "20-23" in labels and "0-3" in labels
    assert score_axis.get_title().startswith("normalised transfer score")


def test_loss_curves_skip_steps_without_the_function(tmp_path):
    from vfl.plots import plot_losses, running_mean

    assert running_mean([4.0, None, 2.0, None, None, None], 3) == [4.0, 4.0, 3.0, 2.0, 2.0, None]
    fig = plot_losses([3.0, 2.0, 1.0], {"recog": [1.0, None, 0.5], "ocr": [None, None, None]}, tmp_path / "l.png")
    lines = fig.axes[1].get_lines()
    assert (tmp_path / "l.png").is_file() and [line.get_label() for line in lines] == ["recognition"]
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[0].get_ydata()) == [1.0, 1.0, 0.75]
