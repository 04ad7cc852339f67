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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny network's w.params (+ w.json) and a 16x24 image."""
    import cv2
    import numpy as np

    import duc_hdc
    from duc_hdc.models.sidecar import write_sidecar

    root = tmp_path_factory.mktemp("spelling")
    net = duc_hdc.get_model("duc_hdc_resnet18", classes=5, base_width=4)
    params = str(root / "w.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    image = str(root / "x.png")
    assert cv2.imwrite(image, np.zeros((16, 24, 3), np.uint8))
    return dict(root=root, params=params, image=image)


@pytest.mark.parametrize("extra, says", [
    (["--mode", "sliding", "--crop-size", "60,60"], "--crop-size (60, 60) must be multiples of 8"),
    (["--crop-size", "64,64"], "--crop-size and --stride apply to --mode 'sliding' only"),
    (["--mode", "sliding"], "--mode 'sliding' needs --crop-size"),
    (["--mode", "sliding", "--crop-size", "16,16", "--stride", "24"],
     "--stride (24, 24) larger than --crop-size (16, 16)"),
])
def test_protocol_errors_name_the_options_typed(tiny, extra, says, capsys):
    """predict's protocol checks (the Segmenter's) said crop_size / stride / mode, the
    library's argument names, to a user who typed --crop-size."""
    rc = cli.main(["predict", tiny["image"], "--model", tiny["params"], "--out",
                   str(tiny["root"] / "o"), "--no-progress"] + extra)
    line = error_line(capsys)
    assert rc == 2 and says in line, line
    assert not re.search(r"(?<!-)\b(crop_size|stride|mode)\b", line), line


@pytest.mark.parametrize("option, value", [("--scales", "1,,2"), ("--scales", "1,"),
                                           ("--crop-size", "64,,64")])
def test_an_empty_list_item_is_refused_not_dropped(tiny, option, value, capsys):
    """``--scales 1,,2`` ran scales 1 and 2, silently: a value left out is refused."""
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", tiny["image"], "--model", tiny["params"], "--out",
                  str(tiny["root"] / "o"), "--no-progress", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "an empty item in %r" % value in err, err


def test_predict_warns_when_the_palette_has_other_classes_than_the_model(tiny, caplog):
    """evaluate warned about a --dataset whose class count differs from the model's; predict
    coloured the 5-class model's map with VOC's 21-colour palette without a word."""
    with caplog.at_level("WARNING"):
        rc = cli.main(["predict", tiny["image"], "--model", tiny["params"], "--out",
                       str(tiny["root"] / "voc"), "--no-progress", "--dataset", "voc"])
    assert rc == 0
    assert "the model predicts 5 classes but voc has 21" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        rc = cli.main(["predict", tiny["image"], "--model", tiny["params"], "--out",
                       str(tiny["root"] / "default"), "--no-progress"])
    assert rc == 0 and "classes but" not in caplog.text  # no --dataset: nothing claimed
