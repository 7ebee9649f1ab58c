import pytest

from vfl.metrics import iou, matches, parse_box, parse_count, parse_yes_no, vfl_band, wilson


def test_parsers():
    assert parse_count("There are 4 cubes.") == 4
    assert parse_count("three") == 3
    assert parse_count("none I can see") is None
    assert parse_yes_no("Yes, there is.") == "yes"
    assert parse_yes_no("No.") == "no"
    assert parse_yes_no("maybe") is None
    assert parse_box("[0.1, 0.2, 0.5, 0.6]", "unit", (100, 200)) == pytest.approx([10, 40, 50, 120])
    assert parse_box("(100,200,500,600)", "thousand", (10, 10)) == pytest.approx([1, 2, 5, 6])
    assert parse_box("box: 3 4 5", "pixel", (10, 10)) is None


def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)


def test_matches_per_function():
    assert matches("count", "5 squares", "5") and not matches("count", "4", "5") and not matches("count", "?", "5")
    assert matches("recog", "no", "no") and not matches("recog", "yes", "no")
    assert matches("ground", "[10, 10, 50, 50]", "", [12, 10, 52, 50], box_format="pixel")
    assert not matches("ground", "[10, 10, 50, 50]", "", [40, 40, 90, 90], box_format="pixel")
    assert matches("ocr", "Apple.", "apple")
    assert matches("ocr", "the word is apple", "apple", other="bread")
    assert not matches("ocr", "apple or bread", "apple", other="bread")
    assert not matches("ocr", "pineapple", "apple")


def test_wilson_known_values():
    # reference values of the 95% Wilson score interval
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_vfl_band():
    rates = [0.0, 0.1, 0.5, 0.9, 0.85, 0.2, 0.88]
    cis = [wilson(round(r * 20), 20) for r in rates]
    peak, band = vfl_band(rates, cis)
    assert peak == 3
    assert band == [3, 4]  # 0.85 lies inside 0.9's interval; 0.5 and 0.2 do not; 0.88 is not adjacent
    assert vfl_band([0, 0, 0], [(0, 0.3)] * 3) == (None, [])
    # a flat curve no higher than the no-swap control (answers that were B's already) is no VFL
    assert vfl_band([0.4, 0.4, 0.35], [wilson(8, 20), wilson(8, 20), wilson(7, 20)], floor=0.3) == (None, [])
    assert vfl_band(rates, cis, floor=0.5) == (3, [3, 4])
    # width is capped at three layers even when all are equal
    assert len(vfl_band([0.5] * 8, [wilson(10, 20)] * 8)[1]) == 3


def test_mean_sd_cells():
    from vfl.report import mean_sd

    assert mean_sd([0.52, 0.52, 0.515]) == "0.518 ± 0.003"  # sample sd (n - 1), as the README tables use
    assert mean_sd([0.5, 0.6]) == "0.550 ± 0.071"
    assert mean_sd([0.4]) == "0.400"
