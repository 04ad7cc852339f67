"""Compiled models (bf16 / int8 PREFIX) through benchmark, export and quantize; quantize's --out
and device options as export's; damaged or partial inputs named in one line."""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc import cli, runtime
from duc_hdc.inference.export import export_compiled
from duc_hdc.inference.graphs import calibration_batch, quantize_net, save_quantized
from duc_hdc.inference.segmenter import Segmenter
from duc_hdc.models.sidecar import SidecarError, write_sidecar

BF16 = runtime.bf16_support() is not None
KINDS = ["int8", pytest.param("bf16", marks=pytest.mark.skipif(not BF16, reason="no bf16 CPU"))]


def _rgb(seed=3, h=32, w=64):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """A tiny network's w.params (+ w.json), its int8 and bf16 prefixes."""
    root = tmp_path_factory.mktemp("compiled")
    mx.random.seed(4)
    net = duc_hdc.get_model("duc_hdc_resnet18", classes=5, base_width=8)
    params = str(root / "w.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    prefixes = {}
    calib = calibration_batch([_rgb(1), _rgb(2)], net.normalization)
    prefixes["int8"] = str(root / "int8" / "tiny")
    save_quantized(quantize_net(net, calib), prefixes["int8"])
    if BF16:
        prefixes["bf16"] = str(root / "bf16" / "tiny")
        export_compiled(net, prefixes["bf16"], "bf16", weights=params)
    return dict(root=root, net=net, params=params, prefix=prefixes)


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "MXNetError" not in err, err
    return err


# ------------------------------------------------------------------------------ benchmark
@pytest.mark.parametrize("kind", KINDS)
def test_benchmark_runs_a_compiled_graph_at_its_own_precision(art, tmp_path, capsys, kind):
    prefix = art["prefix"][kind]
    out = str(tmp_path / "b.json")
    rc = cli.main(["benchmark", "--model", prefix, "--shape", "1,3,32,64", "--iters", "1",
                   "--json", out])
    assert rc == 0, capsys.readouterr().err
    doc = json.load(open(out))
    assert doc["precision"] == kind and doc["median_s"] > 0
    # the FLOPs of the network the graph computes (the same count as its .params)
    fp32 = str(tmp_path / "f.json")
    assert cli.main(["benchmark", "--model", art["params"], "--shape", "1,3,32,64", "--iters",
                     "1", "--json", fp32]) == 0
    assert doc["gflop"] == json.load(open(fp32))["gflop"] > 0
    assert "precision %s" % kind in capsys.readouterr().out
    # its own precision given explicitly: runs; another one: refused in one line, as predict does
    assert cli.main(["benchmark", "--model", prefix, "--shape", "1,3,32,64", "--iters", "1",
                     "--precision", kind]) == 0
    capsys.readouterr()
    rc = cli.main(["benchmark", "--model", prefix, "--shape", "1,3,32,64", "--iters", "1",
                   "--precision", "fp32"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "compiled %s graph" % kind in err and "--precision fp32" in err
    rc = cli.main(["benchmark", "--model", prefix, "--shape", "1,3,32,64", "--iters", "1",
                   "--plain"])
    assert rc == 2
    assert "--plain" in _one_line_error(capsys)


# ------------------------------------------------------------------------------ export
@pytest.mark.parametrize("kind", KINDS)
def test_export_rewrites_a_compiled_graph_to_another_prefix(art, tmp_path, capsys, kind):
    prefix = art["prefix"][kind]
    out = str(tmp_path / "again") + "/"
    rc = cli.main(["export", "--model", prefix, "--shape", "1,3,32,64", "--out", out])
    assert rc == 0, capsys.readouterr().err
    new = str(tmp_path / "again" / "tiny")  # a folder --out: FOLDER/<the source's name>
    assert "prefix %s (--out is a folder)" % new in capsys.readouterr().out
    assert sorted(os.listdir(str(tmp_path / "again"))) == [
        "tiny-0000.params", "tiny-symbol.json", "tiny.json"]
    for suffix in ("-symbol.json", "-0000.params"):  # the same graph and weights
        with open(prefix + suffix, "rb") as a, open(new + suffix, "rb") as b:
            assert a.read() == b.read()
    with open(prefix + ".json") as a, open(new + ".json") as b:
        assert json.load(a) == json.load(b)
    reloaded = duc_hdc.load(new)
    assert reloaded.kind == kind and reloaded.classes == 5
    np.testing.assert_array_equal(Segmenter(reloaded).predict(_rgb(7)),
                                  Segmenter(duc_hdc.load(prefix)).predict(_rgb(7)))
    # --precision of the graph itself: the same; another precision or ONNX: refused
    assert cli.main(["export", "--model", prefix, "--shape", "1,3,32,64", "--out",
                     str(tmp_path / "same"), "--precision", kind]) == 0
    assert os.path.isfile(str(tmp_path / "same-symbol.json"))
    capsys.readouterr()
    for extra, words in ((["--precision", "fp32"], ["compiled %s graph" % kind, ".params"]),
                         (["--onnx"], ["compiled %s graph" % kind, ".params"])):
        rc = cli.main(["export", "--model", prefix, "--shape", "1,3,32,64", "--out",
                       str(tmp_path / "no"), *extra])
        assert rc == 2
        err = _one_line_error(capsys)
        assert all(w in err for w in words), err
    assert not any(n.startswith("no") for n in os.listdir(str(tmp_path)))


# ------------------------------------------------------------------------------ quantize
@pytest.mark.parametrize("kind", KINDS)
def test_quantize_refuses_a_compiled_graph_naming_what_it_needs(art, tiny_recs, tmp_path,
                                                                 capsys, kind):
    rc = cli.main(["quantize", "--model", art["prefix"][kind], "--calib-rec", tiny_recs["train"],
                   "--num-calib", "1", "--out", str(tmp_path / "q")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert art["prefix"][kind] in err and "compiled %s graph" % kind in err
    assert ".params" in err and "zoo name" in err
    assert os.listdir(str(tmp_path)) == []


def test_quantize_out_folder_as_export(art, tiny_recs, tmp_path, capsys):
    """--out DIR/ is a folder (created), named as export names it: DIR/<source name>."""
    out = str(tmp_path / "q9") + "/"
    rc = cli.main(["quantize", "--model", art["params"], "--calib-rec", tiny_recs["train"],
                   "--num-calib", "1", "--out", out, "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "prefix %s (--out is a folder)" % str(tmp_path / "q9" / "w") in capsys.readouterr().out
    assert sorted(os.listdir(str(tmp_path / "q9"))) == ["w-0000.params", "w-symbol.json",
                                                        "w.json"]
    assert duc_hdc.load(str(tmp_path / "q9" / "w")).kind == "int8"
    # export into a folder picks the same name
    assert cli.main(["export", "--model", art["params"], "--shape", "1,3,32,64", "--out",
                     str(tmp_path / "e9") + "/", "--no-check"]) == 0
    assert sorted(os.listdir(str(tmp_path / "e9"))) == sorted(os.listdir(str(tmp_path / "q9")))


@pytest.mark.skipif(mx.context.num_gpus() > 0, reason="a GPU machine runs --fp16")
def test_quantize_refuses_fp16_without_a_gpu(art, tiny_recs, tmp_path, capsys):
    for option in (["--fp16"], ["--cudnn-autotune", "1"]):
        rc = cli.main(["quantize", "--model", art["params"], "--calib-rec", tiny_recs["train"],
                       "--num-calib", "1", "--out", str(tmp_path / "q"), *option])
        assert rc == 2
        assert option[0] in _one_line_error(capsys)
    assert os.listdir(str(tmp_path)) == []


# ------------------------------------------------------------------------------ damaged inputs
def test_convert_truncated_release_params_is_one_line(reference_symbol_path, tmp_path, capsys):
    prefix = str(tmp_path / "release")
    shutil.copy(reference_symbol_path, prefix + "-symbol.json")
    mx.nd.save(prefix + "-0000.params", {"arg:conv1_weight": mx.nd.ones((64, 3, 7, 7))})
    data = open(prefix + "-0000.params", "rb").read()
    with open(prefix + "-0000.params", "wb") as f:
        f.write(data[:len(data) // 2])
    rc = cli.main(["convert", "tusimple", "--prefix", prefix, "--epoch", "0", "--classes", "19",
                   "--out", str(tmp_path / "out")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "release-0000.params" in err and "truncated" in err
    assert not os.path.exists(str(tmp_path / "out"))


def _partial_copy(src_params, dst_params, drop, side_of=None):
    shutil.copy(src_params, dst_params)
    side = side_of or os.path.splitext(src_params)[0] + ".json"
    with open(side) as f:
        doc = json.load(f)
    for key in drop:
        del doc["model"][key]
    with open(os.path.splitext(dst_params)[0] + ".json", "w") as f:
        json.dump(doc, f)
    return os.path.splitext(dst_params)[0] + ".json"


def test_sidecar_missing_a_setting_names_it(art, tmp_path, capsys):
    side = _partial_copy(art["params"], str(tmp_path / "copy.params"), ["cell_width"])
    with pytest.raises(SidecarError) as info:
        duc_hdc.load(str(tmp_path / "copy.params"))
    text = str(info.value)
    assert side in text and "cell_width" in text and "shape" not in text
    image = str(tmp_path / "img.png")
    import cv2
    cv2.imwrite(image, _rgb())
    rc = cli.main(["predict", image, "--model", str(tmp_path / "copy.params"), "--out",
                   str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert side in err and "cell_width" in err
    # several missing: all named
    side = _partial_copy(art["params"], str(tmp_path / "two.params"), ["classes", "dilations"])
    with pytest.raises(SidecarError, match="classes.*dilations"):
        duc_hdc.load(str(tmp_path / "two.params"))


def test_sidecar_without_a_defaulted_setting_names_it_when_the_weights_do_not_fit(art, tmp_path):
    """A setting with a default (base_width 64): used when absent; where the weights need
    another value, the message names the sidecar and the missing setting."""
    side = _partial_copy(art["params"], str(tmp_path / "narrow.params"), ["base_width"])
    with pytest.raises(ValueError) as info:
        duc_hdc.load(str(tmp_path / "narrow.params"))
    text = str(info.value)
    assert side in text and "base_width" in text and "does not fit" in text
    # a defaulted setting whose default fits: loads
    _partial_copy(art["params"], str(tmp_path / "plain.params"), ["head"])
    assert duc_hdc.load(str(tmp_path / "plain.params")).config == art["net"].config


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_sidecar_missing_a_setting_names_it(art, tmp_path, kind):
    prefix = art["prefix"][kind]
    copy = str(tmp_path / "c")
    for suffix in ("-symbol.json", "-0000.params"):
        shutil.copy(prefix + suffix, copy + suffix)
    with open(prefix + ".json") as f:
        doc = json.load(f)
    del doc["model"]["cell_width"]
    with open(copy + ".json", "w") as f:
        json.dump(doc, f)
    with pytest.raises(SidecarError) as info:
        duc_hdc.load(copy)
    assert copy + ".json" in str(info.value) and "cell_width" in str(info.value)


def test_graph_passes_refuse_a_compiled_graph_in_one_line(art):
    """The library: quantize_net / optimized_block on an already compiled graph say what they
    take (no AttributeError from deep inside the graph passes)."""
    from duc_hdc.inference.graphs import optimized_block

    qnet = duc_hdc.load(art["prefix"]["int8"])
    calib = calibration_batch([_rgb(1)], qnet.normalization)
    for build in (lambda: quantize_net(qnet, calib), lambda: optimized_block(qnet)):
        with pytest.raises(ValueError, match="compiled int8 graph"):
            build()
