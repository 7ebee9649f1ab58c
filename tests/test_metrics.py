import math

import numpy as np
import pytest

from vfl.metrics import (SCORER_OF, difference_interval, holm, iou, paired_difference_interval, paired_p_value,
                         parse_box, parse_count, parse_yes_no, score, vfl_band, wilson)


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


def matches(function, answer, target, box=None, **options) -> bool:
    """A right answer by the function's own scorer."""
    return score(SCORER_OF[function], answer, target, box, **options) >= 0.5


def test_matches_per_function():
    assert matches("count", "5 squares", "5") and not matches("count", "4", "5") and not matches("count", "?", "5")
    assert matches("recog", "no", "no") and not matches("recog", "yes", "no")
    assert matches("ground", "[10, 10, 50, 50]", "", [12, 10, 52, 50], box_format="pixel")
    assert not matches("ground", "[10, 10, 50, 50]", "", [40, 40, 90, 90], box_format="pixel")
    assert matches("ocr", "Apple.", "apple")
    assert matches("ocr", "the word is apple", "apple", other="bread")
    assert not matches("ocr", "apple or bread", "apple", other="bread")
    assert not matches("ocr", "pineapple", "apple")


def test_multiple_choice_letters_worked_by_hand():
    from vfl.metrics import parse_choice, score

    for said in ("(B)", "B", "B.", "b) red", "(b) Red", "The answer is B.", "Answer: (B)", "red"):
        assert score("choice", said, "(B)", choices=["blue", "red", "green"]) == 1.0, said
    for said in ("", "I think so", "(D)", "blue", "(A)", "Z", "red or blue"):  # malformed, out of range, wrong
        assert score("choice", said, "(B)", choices=["blue", "red", "green"]) == 0.0, said
    assert parse_choice("I think") is None and parse_choice("(a)") == "a" and parse_choice("C") == "c"
    assert score("choice", "(a)", "(a)") == 1.0  # MMVP's lower-case letters


def test_pope_yes_no_numbers_worked_by_hand():
    from vfl.metrics import yes_no_stats

    said = ["Yes.", "yes", "no", "No", "maybe", "yes"]
    truth = ["yes", "no", "yes", "no", "yes", "yes"]
    stats = yes_no_stats(said, truth)  # yes said 3 times, right twice; 4 true yes, 2 found; "maybe" counts wrong
    assert stats["accuracy"] == pytest.approx(3 / 6) and stats["yes_ratio"] == pytest.approx(3 / 6)
    assert stats["precision"] == pytest.approx(2 / 3) and stats["recall"] == pytest.approx(2 / 4)
    assert stats["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert yes_no_stats(["no"], ["yes"])["f1"] == 0.0


def test_box_iou_at_half_and_in_each_family_convention():
    from vfl.metrics import score

    box = [0, 0, 10, 10]  # a 10 x 10 box; [0, 0, 10, 5] overlaps it by exactly one half
    assert score("box-iou", "[0, 0, 10, 5]", "", box, box_format="pixel", image_size=(100, 100)) == 1.0
    assert score("box-iou", "[0, 0, 10, 4.9]", "", box, box_format="pixel", image_size=(100, 100)) == 0.0
    assert score("box-iou", "[0.0, 0.0, 0.1, 0.1]", "", box, box_format="unit", image_size=(100, 100)) == 1.0
    assert score("box-iou", "(0,0),(100,100)", "", box, box_format="thousand", image_size=(100, 100)) == 1.0
    # Qwen2.5-VL: pixels of the image its processor made (here 200 x 200 from a 100 x 100 one)
    assert score("box-iou", "[0, 0, 20, 20]", "", box, box_format="pixel", image_size=(100, 100),
                 model_size=(200, 200)) == 1.0
    for said in ("", "the box is [1, 2]", "nowhere"):
        assert score("box-iou", said, "", box, box_format="pixel", image_size=(100, 100)) == 0.0


def test_textvqa_soft_accuracy_worked_by_hand():
    from vfl.metrics import score, vqa_normalise

    accepted = ["coca cola"] * 2 + ["Coke"] * 4 + ["the coke"] + ["two"] * 3
    assert score("vqa-soft", "coke", "coke", accepted=accepted) == 1.0  # 5 annotators (articles dropped)
    assert score("vqa-soft", "Coca-Cola", "coke", accepted=accepted) == pytest.approx(2 / 3)  # "-" is a space
    assert score("vqa-soft", "coca cola.", "coke", accepted=accepted) == pytest.approx(2 / 3)
    assert score("vqa-soft", "2", "coke", accepted=accepted) == 1.0  # "two" is 2
    assert score("vqa-soft", "", "coke", accepted=accepted) == 0.0
    assert score("vqa-soft", "pepsi", "coke", accepted=accepted) == 0.0
    assert vqa_normalise("The Answer's: TWO!") == "answers 2"


def test_ocrbench_containment_worked_by_hand():
    from vfl.metrics import score

    assert score("contains", "The sign says STOP here", "STOP", accepted=["stop", "Stop"]) == 1.0
    assert score("contains", "S T O P", "STOP", accepted=["STOP"]) == 0.0
    assert score("contains", "", "STOP") == 0.0
    assert score("contains", "exit", "STOP") == 0.0
    assert score("contains", "anything", "x", accepted=[" "]) == 0.0  # an empty accepted answer is in everything


def test_an_unknown_scorer_is_named():
    from vfl.metrics import score

    with pytest.raises(ValueError, match="unknown scorer 'bleu'; choose from number, yes-no"):
        score("bleu", "a", "a")


def test_wilson_known_values():
    # reference values of the 95% Wilson score interval
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_p_value_is_the_exact_one_sided_binomial_tail():
    assert paired_p_value(5, 0) == pytest.approx(1 / 32)
    assert paired_p_value(3, 1) == pytest.approx(5 / 16)  # P(X >= 3 | n = 4)
    assert paired_p_value(0, 0) == 1.0
    assert paired_p_value(0, 4) == 1.0
    assert paired_p_value(1, 0) == 0.5  # one flip in 40 probes proves nothing


def test_holm_adjusts_in_order_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.2, 0.9, 0.01, 0.6]) == pytest.approx([0.6, 1.0, 0.04, 1.0])


def test_vfl_band_grows_over_adjacent_passing_windows_only():
    rates = [0.0, 0.1, 0.5, 0.9, 0.85, 0.2, 0.88]
    passing = [False, False, True, True, True, False, True]
    assert vfl_band(rates, passing) == (3, [2, 3, 4])
    assert vfl_band(rates, [False, False, False, True, False, False, True]) == (3, [3])
    assert vfl_band(rates, [False] * 7) == (None, [])
    assert vfl_band([0.5] * 8, [True] * 8) == (0, [0, 1, 2])  # capped at three windows, ties go to the earliest
    assert vfl_band([0.5] * 8, [True] * 8, max_windows=5)[1] == [0, 1, 2, 3, 4]


def test_mean_sd_cells():
    from vfl.report import mean_sd

    assert mean_sd([0.52, 0.52, 0.515]) == "0.518 ± 0.003"  # sample sd (n - 1), as the README tables use
    assert mean_sd([0.5, 0.6]) == "0.550 ± 0.071"
    assert mean_sd([0.4]) == "0.400"


def test_paired_difference_interval_covers_the_true_difference_at_its_level():
    """Newcombe's method 10 holds about 95% coverage on paired outcomes (simulated: n 60, correlated pairs)."""
    rng = np.random.default_rng(0)
    cells = np.array([0.45, 0.15, 0.05, 0.35])  # both right, only the first, only the second, neither
    truth = cells[1] - cells[2]
    hits = 0
    for counts in rng.multinomial(60, cells, size=2000):
        lower, upper = paired_difference_interval(*map(int, counts))
        hits += lower <= truth <= upper
    assert 0.93 <= hits / 2000 <= 0.975


def test_paired_difference_interval_is_antisymmetric_contains_the_estimate_and_stays_in_range():
    lower, upper = paired_difference_interval(20, 9, 3, 8)
    assert lower < 6 / 40 < upper
    assert paired_difference_interval(20, 3, 9, 8) == pytest.approx((-upper, -lower))
    # no discordant variation (phi 0): the two Wilson margins added in quadrature
    assert paired_difference_interval(0, 30, 0, 0) == pytest.approx((1 - math.sqrt(2) * wilson(0, 30)[1], 1.0))
    assert paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)
    narrow = paired_difference_interval(200, 90, 30, 80)
    assert narrow[1] - narrow[0] < upper - lower


def test_difference_interval_of_independent_rates_covers_and_is_the_paired_one_without_correlation():
    rng = np.random.default_rng(1)
    hits = 0
    for a, b in zip(rng.binomial(80, 0.6, 2000), rng.binomial(120, 0.45, 2000)):
        lower, upper = difference_interval(int(a), 80, int(b), 120)
        hits += lower <= 0.15 <= upper
    assert 0.93 <= hits / 2000 <= 0.975
    # uncorrelated paired cells (phi 0: both * neither == gains * losses) give the independent interval
    assert paired_difference_interval(4, 4, 4, 4) == pytest.approx(difference_interval(8, 16, 8, 16))
    assert difference_interval(0, 0, 3, 5) == (-1.0, 1.0)
