"""The gridding analysis (Section 3.2), checked against hand-worked cases."""
import json

import pytest

from duc_hdc import cli
from duc_hdc.models.gridding import analyze, hdc_condition, reachable_offsets


def test_equal_rates_leave_holes():
    r = analyze([2, 2, 2])
    assert r["receptive_field"] == 13
    assert r["holes_1d"] == [-5, -3, -1, 1, 3, 5]  # every odd offset: gridding
    assert r["hole_fraction"] == pytest.approx(1 - (7 / 13) ** 2)
    assert r["common_factor"] == 2 and not r["hdc_condition"]


def test_hdc_rates_cover_the_field():
    r = analyze([1, 2, 5])
    assert r["receptive_field"] == 17
    assert r["holes_1d"] == [] and r["hole_fraction"] == 0.0
    assert r["coverage"].all() and r["hdc_condition"]


def test_paper_counterexample_1_2_9():
    # M_2 = max(9 - 4, 9 - 2*(9 - 2), 2) = 5 > 3: holes at +-4, +-5
    assert hdc_condition([1, 2, 9]) == (5, False)
    assert analyze([1, 2, 9])["holes_1d"] == [-5, -4, 4, 5]


def test_single_layer_and_offsets():
    assert reachable_offsets([3]) == [-3, 0, 3]
    assert analyze([1])["hole_fraction"] == 0.0
    with pytest.raises(ValueError, match="positive integers"):
        analyze([1, 0])


def test_cli_gridding(capsys):
    assert cli.main(["gridding", "2,2,2"]) == 0
    out = capsys.readouterr().out
    assert "hole fraction (2-D): 0.7101" in out and "fails" in out
    assert cli.main(["gridding", "1,2,5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["holes_1d"] == [] and doc["hdc_condition"] is True
