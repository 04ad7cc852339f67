"""One --precision fp32|bf16|int8 on predict, evaluate, benchmark and export, through the CLI;
each CPU gets the behaviour it can run (bf16 runs on AMX / AVX512_BF16 CPUs, is refused elsewhere)."""
import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc import cli, runtime
from duc_hdc.data.datasets import convert_cityscapes
from duc_hdc.inference.segmenter import Segmenter
from duc_hdc.models.sidecar import write_sidecar

from data_fixtures import make_cityscapes

BF16 = runtime.bf16_support() is not None  # what this CPU can run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    make_cityscapes(str(root / "cs"), np.random.default_rng(5), counts={"val": 3})
    convert_cityscapes(str(root / "cs"), "val", str(root / "val"), progress=False)
    mx.random.seed(2)
    net = duc_hdc.get_model("duc_hdc_resnet18", classes=19, base_width=8)
    params = str(root / "w.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    image = str(root / "img.png")
    rgb = np.random.RandomState(1).randint(0, 256, (40, 72, 3)).astype(np.uint8)
    cv2.imwrite(image, rgb[:, :, ::-1])
    want = Segmenter(net).predict(rgb)
    return dict(root=root, params=params, rec=str(root / "val.rec"), image=image, rgb=rgb,
                want=want)


def _labels(out):
    return cv2.imread(os.path.join(out, "img_trainIds.png"), cv2.IMREAD_UNCHANGED)


def test_predict_bf16_runs_where_the_cpu_can_and_is_refused_elsewhere(setup, tmp_path, capsys):
    out = str(tmp_path / "bf16")
    rc = cli.main(["predict", setup["image"], "--model", setup["params"], "--out", out,
                   "--precision", "bf16", "--no-progress"])
    if BF16:
        assert rc == 0
        assert np.mean(_labels(out) == setup["want"]) > 0.95
    else:
        err = capsys.readouterr().err
        assert rc == 2 and "bf16" in err and err.count("\n") == 1


def test_bf16_is_refused_in_one_line_where_dnnl_max_cpu_isa_caps_onednn_below_avx512(
        setup, tmp_path, capsys, monkeypatch):
    """Before: MXNetError "could not create a primitive descriptor iterator" (a traceback)."""
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    rc = cli.main(["predict", setup["image"], "--model", setup["params"], "--out",
                   str(tmp_path / "o"), "--precision", "bf16", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "DNNL_MAX_CPU_ISA=AVX2" in err and "MXNetError" not in err
    assert not os.path.exists(str(tmp_path / "o" / "img_trainIds.png"))


def test_predict_int8_needs_calibration_then_runs(setup, tmp_path, capsys):
    out = str(tmp_path / "int8")
    rc = cli.main(["predict", setup["image"], "--model", setup["params"], "--out", out,
                   "--precision", "int8", "--no-progress"])
    assert rc == 2 and "--calib-rec" in capsys.readouterr().err
    rc = cli.main(["predict", setup["image"], "--model", setup["params"], "--out", out,
                   "--precision", "int8", "--calib-rec", setup["rec"], "--num-calib", "2",
                   "--no-progress"])
    assert rc == 0
    assert np.mean(_labels(out) == setup["want"]) > 0.6
    rc = cli.main(["predict", setup["image"], "--model", setup["params"], "--out", out,
                   "--calib-rec", setup["rec"]])
    assert rc == 2 and "give --precision int8" in capsys.readouterr().err


def test_evaluate_records_the_precision(setup, tmp_path):
    out_json = str(tmp_path / "m.json")
    rc = cli.main(["evaluate", "--model", setup["params"], "--rec", setup["rec"], "--precision",
                   "int8", "--calib-rec", setup["rec"], "--out-json", out_json, "--no-progress"])
    assert rc == 0
    assert json.load(open(out_json))["inference"]["precision"] == "int8"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_export_precision_loads_back_through_the_one_loader(setup, tmp_path, capsys, precision):
    prefix = str(tmp_path / ("tiny_" + precision))
    argv = ["export", "--model", setup["params"], "--shape", "1,3,40,72", "--out", prefix,
            "--precision", precision]
    if precision == "int8":
        argv += ["--calib-rec", setup["rec"]]
    rc = cli.main(argv)
    if precision == "bf16" and not BF16:
        assert rc == 2 and "bf16" in capsys.readouterr().err
        return
    assert rc == 0
    # the written graph was loaded back and compared with fp32 (printed nothing before)
    checked = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("symbol at ")]
    assert len(checked) == 1, checked
    check = json.loads(checked[0].split(": ", 1)[1])
    assert check["fp32"] < (0.05 if precision == "bf16" else 0.5), check
    assert check["argmax_agreement"] > (0.95 if precision == "bf16" else 0.6), check
    net = duc_hdc.load(prefix)
    assert net.kind == precision and net.classes == 19
    agree = np.mean(Segmenter(net).predict(setup["rgb"]) == setup["want"])
    assert agree > (0.95 if precision == "bf16" else 0.6), agree
    assert cli.main(argv + ["--no-check"]) == 0
    assert "symbol at " not in capsys.readouterr().out
    rc = cli.main(argv + ["--onnx"])
    assert rc == 2 and "--onnx exports fp32" in capsys.readouterr().err


def test_benchmark_takes_an_artifact_and_a_precision(setup, tmp_path, capsys):
    out = str(tmp_path / "b.json")
    rc = cli.main(["benchmark", "--model", setup["params"], "--shape", "1,3,32,64", "--iters",
                   "1", "--precision", "int8", "--json", out])
    assert rc == 0
    doc = json.load(open(out))
    assert doc["precision"] == "int8" and doc["median_s"] > 0
    out = capsys.readouterr().out
    assert "oneDNN ISA" in out
    # int8 quantizes the merged graph: the report says so, as for fp32 and bf16 (null before)
    from duc_hdc.inference.merging import merge_state
    assert doc["centre_merge"] == merge_state()[1] and "centre-tap merge: " in out
    assert doc["input_split"] is None  # int8 is not split


def test_env_reports_the_amx_decision(capsys):
    assert cli.main(["env", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "amx" in out and "OMP_NUM_THREADS" in out
    assert ("AMX enabled" in out) == runtime.amx_state()["enabled"]
