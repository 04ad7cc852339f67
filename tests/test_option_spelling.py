"""One spelling, one meaning: an option shared by predict, evaluate and benchmark means the
same thing in each."""
import re

import pytest

from duc_hdc import cli

from run_helpers import error_line


def _help(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return capsys.readouterr().out


def test_mode_is_the_inference_protocol_wherever_it_is_offered(capsys):
    for command in ("predict", "evaluate"):
        assert "--mode {whole,sliding}" in _help(capsys, command)
    # benchmark's former --mode fp32|fused|int8 (a precision, not a protocol) is not offered
    text = _help(capsys, "benchmark")
    assert not re.search(r"--mode\b", text) and "--precision {fp32,bf16,int8}" in text


def test_benchmark_refuses_the_protocol_modes_in_one_line(capsys):
    for mode in ("whole", "sliding"):
        assert cli.main(["benchmark", "--model", "duc_hdc_resnet18", "--classes", "3",
                         "--base-width", "4", "--shape", "1,3,16,16", "--iters", "1",
                         "--mode", mode]) == 2
        line = error_line(capsys)
        assert "--mode %s" % mode in line and "--precision" in line and "--shape" in line
