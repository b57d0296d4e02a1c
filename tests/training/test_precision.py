"""The bfloat16 check: a measured slowdown, and a warning only where a recipe asks for bfloat16 on a slow CPU."""

from __future__ import annotations

import math

from rec_eraser.training.precision import SLOWDOWN_WARNING, bfloat16_slowdown, precision_warning


def test_the_slowdown_is_a_measured_positive_ratio():
    factor = bfloat16_slowdown()
    assert math.isfinite(factor) and factor > 0


def test_a_warning_only_for_bfloat16_on_a_cpu_where_it_is_slow():
    asked = []

    def slow() -> float:
        asked.append(1)
        return 61.0

    message = precision_warning("bfloat16", "cpu", slow)
    assert message is not None and "61x as long as in float32" in message and 'precision = "float32"' in message
    assert precision_warning("bfloat16", "cpu", lambda: 0.7) is None  # native bfloat16: faster, nothing to say
    assert precision_warning("bfloat16", "cpu", lambda: SLOWDOWN_WARNING) is None
    assert precision_warning("float32", "cpu", slow) is None and precision_warning("bfloat16", "cuda", slow) is None
    assert len(asked) == 1  # nothing is measured for a recipe that does not ask for bfloat16 on the CPU
