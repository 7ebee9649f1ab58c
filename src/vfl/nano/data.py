"""A suite's samples by name: the sample maker of v1 (the shipped nano's data, `vfl.nano.suite_v1`) or v2
(question-dependent, `vfl.nano.suite_v2`), and held-out evaluation items."""

from __future__ import annotations

from vfl.nano.suite_v1 import make_sample
from vfl.nano.suite_v2 import make_question_sample
from vfl.probes.generate import SUITES


def sample_maker(suite: str = "v1"):
    """``make(function, index, seed, **options)`` of a suite: v1 (`make_sample`, the shipped nano's data) or
    v2 (`vfl.nano.suite_v2`, question-dependent; held-out evaluation reads held-out words)."""
    if suite == "v1":
        return make_sample
    if suite == "v2":
        return make_question_sample
    raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")


def held_out_items(functions, n: int, seed: int, suite: str = "v1", **sample_options) -> list:
    """``n`` evaluation items per function (ids ``<function>-<k>`` in order), for `vfl.evaluate.evaluate`;
    ``sample_options`` go to the suite's sample maker (e.g. ``counts``); suite v2 reads held-out words."""
    from vfl.evaluate import Item

    make = sample_maker(suite)
    if suite == "v2":
        sample_options = {"split": "held_out", **sample_options}
    samples = [make(f, i, seed, **sample_options) for f in functions for i in range(n)]
    return [Item(f"{s.function}-{k}", s.function, s.image, s.question, s.answer, s.box) for k, s in enumerate(samples)]
