"""Gridding analysis of a chain of dilated 3x3 convolutions (Section 3.2 of the paper).

A stack of 3x3 convs with dilations r_1..r_n sees input offsets that are sums of one
``{-r_i, 0, r_i}`` per layer. With a common factor (e.g. 2, 2, 2) whole rows and columns of the
receptive field are never sampled: the "gridding" problem. HDC picks rates so that the sampled
offsets cover the receptive field completely. The paper's condition: with
``M_n = r_n`` and ``M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i)``, the
largest gap left for the first layer, ``M_2``, must be at most the kernel size (3), and the
rates must not share a common factor (2, 2, 2 passes the recursion but reads one pixel in four).

All computed by hand here: no library offers it.
"""
from functools import reduce
from math import gcd

import numpy as np


def reachable_offsets(rates, kernel=3):
    """Sorted 1-D offsets (relative to the output unit) that some path through the chain reads.

    Parameters
    ----------
    rates : sequence of int
        Dilation of each layer, input side first.
    kernel : int
        Kernel size (odd).
    """
    taps = range(-(kernel // 2), kernel // 2 + 1)
    offsets = {0}
    for r in rates:
        offsets = {o + t * r for o in offsets for t in taps}
    return sorted(offsets)


def hdc_condition(rates, kernel=3):
    """The paper's criterion: returns (M_2, holds), holds = M_2 <= kernel and no common factor."""
    rates = list(rates)
    m = rates[-1]
    for r in reversed(rates[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    return m, m <= kernel and reduce(gcd, rates) == 1


def analyze(rates, kernel=3):
    """Receptive field, reached offsets and holes of a chain of dilated convs.

    Returns
    -------
    dict
        ``rates``; ``receptive_field`` (side length in input pixels); ``covered_1d`` (offsets
        reached along one axis); ``holes_1d`` (offsets inside the field never reached);
        ``hole_fraction`` (of the 2-D field: the axes are independent, so a 2-D offset is
        reached iff both coordinates are); ``common_factor`` of the rates; ``m2`` and
        ``hdc_condition`` (the paper's criterion); ``coverage`` (2-D boolean map, True where
        read).
    """
    rates = [int(r) for r in rates]
    if not rates or any(r < 1 for r in rates):
        raise ValueError("rates must be positive integers, got %r" % (rates,))
    half = (kernel // 2) * sum(rates)
    field = 2 * half + 1
    covered = reachable_offsets(rates, kernel)
    holes = sorted(set(range(-half, half + 1)) - set(covered))
    line = np.zeros(field, dtype=bool)
    line[np.asarray(covered) + half] = True
    coverage = np.outer(line, line)
    m2, holds = hdc_condition(rates, kernel)
    return dict(rates=rates, receptive_field=field, covered_1d=covered, holes_1d=holes,
                hole_fraction=1.0 - coverage.mean(), common_factor=reduce(gcd, rates),
                m2=m2, hdc_condition=holds, coverage=coverage)


def format_report(result, draw_limit=41):
    """Human-readable report; draws the coverage map when the field is small enough."""
    lines = [
        "dilation rates:      %s" % ",".join(map(str, result["rates"])),
        "receptive field:     %d x %d" % (result["receptive_field"], result["receptive_field"]),
        "offsets reached:     %d of %d per axis" % (len(result["covered_1d"]),
                                                   result["receptive_field"]),
        "holes (1-D):         %s" % (result["holes_1d"] or "none"),
        "hole fraction (2-D): %.4f" % result["hole_fraction"],
        "HDC condition:       M_2 = %d (needs <= 3), common factor %d (needs 1) -> %s" % (
            result["m2"], result["common_factor"],
            "holds" if result["hdc_condition"] else "fails"),
    ]
    if result["receptive_field"] <= draw_limit:
        lines.append("coverage (# read, . hole):")
        lines += ["  " + "".join("#" if v else "." for v in row) for row in result["coverage"]]
    return "\n".join(lines)
