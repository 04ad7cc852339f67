"""Export: symbol JSON + params reload with SymbolBlock and Module, ONNX runs in onnxruntime,
the one loader reads every export into the Segmenter with the original labels; --out, --shape
and untrained weights."""
import json
import logging
import os

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

import duc_hdc
from duc_hdc import cli, get_model
from duc_hdc.inference.export import ShapeError, export_model, export_prefix, parse_shape
from duc_hdc.inference.graphs import InferenceNet, calibration_batch, quantize_net, save_quantized
from duc_hdc.inference.segmenter import Segmenter


def _x(shape, seed):
    return mx.nd.array(np.random.RandomState(seed).normal(0, 1, shape).astype(np.float32))


def test_symbol_export_serves_several_sizes(tmp_path):
    net = get_model("duc_hdc_resnet18", classes=4, base_width=8, variant="tusimple")
    prefix = str(tmp_path / "tiny")
    result = export_model(net, prefix, (1, 3, 64, 96), onnx=False)
    for diffs in result["symbol_diff"].values():
        assert diffs["symbolblock"] < 1e-5 and diffs["module"] < 1e-5
    block = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                         prefix + "-0000.params")
    for shape in [(1, 3, 64, 96), (2, 3, 40, 24)]:  # sizes other than the traced one
        x = _x(shape, 3)
        want = net(x).asnumpy()
        got = block(x).asnumpy()
        assert got.shape == (shape[0], 4, shape[2] // 2, shape[3] // 2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    with open(prefix + ".json") as f:
        assert json.load(f)["model"]["classes"] == 4


@pytest.mark.parametrize("classes, cell_width", [(3, 4), (19, 2)])  # 19 x 16: padded head
def test_onnx_export_runs_in_onnxruntime(tmp_path, classes, cell_width):
    net = get_model("duc_hdc_resnet18", classes=classes, base_width=8, cell_width=cell_width)
    assert {b.padded for b in net.head.branches} == ({320} if classes == 19 else {12})
    prefix = str(tmp_path / "onnx")
    result = export_model(net, prefix, (1, 3, 48, 64), onnx=True)
    assert all(d < 1e-4 for d in result["onnx_diff"].values())
    sess = ort.InferenceSession(prefix + ".onnx", providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["data"]  # weights are not graph inputs
    x = _x((2, 3, 32, 40), 5)
    got = sess.run(None, {"data": x.asnumpy()})[0]
    want = net(x).asnumpy()
    assert got.shape == (2, classes, 32 // cell_width, 40 // cell_width)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def _declared_opset(path):
    import onnx

    return {o.domain: o.version for o in onnx.load(path).opset_import}[""]


def test_onnx_opset_is_the_translations_by_default_and_chosen_with_opset(tmp_path, capsys):
    """MXNet 1.9.1 translates to opset-13 nodes (its translations stop at 13) but declared the
    installed onnx's newest opset (21 with onnx 1.16): the file claimed an opset its nodes
    were not written for, and a runtime that reads only older opsets refused it. The default
    is now 13, what the nodes are; ``--opset N`` converts up with onnx's version converter,
    and the file runs in onnxruntime at the net's values either way."""
    import onnx

    from duc_hdc.inference.export import ONNX_OPSET

    assert ONNX_OPSET == 13
    net = get_model("duc_hdc_resnet18", classes=3, base_width=4, cell_width=4)
    x = _x((1, 3, 32, 40), 6)
    want = net(x).asnumpy()
    newest = onnx.defs.onnx_opset_version()
    for opset in (None, 17, newest):
        prefix = str(tmp_path / ("o%s" % opset))
        kwargs = {} if opset is None else dict(opset=opset)
        result = export_model(net, prefix, (1, 3, 32, 40), onnx=True, **kwargs)
        assert all(d < 1e-4 for d in result["onnx_diff"].values())
        assert _declared_opset(prefix + ".onnx") == (opset or 13)
        sess = ort.InferenceSession(prefix + ".onnx", providers=["CPUExecutionProvider"])
        got = sess.run(None, {"data": x.asnumpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # out of range, or without --onnx: one line, before anything is written
    for argv, text in [(["--onnx", "--opset", "12"], "--opset 12: MXNet's ONNX translations "
                        "are opset 13 nodes; give 13 to %d" % newest),
                       (["--onnx", "--opset", str(newest + 1)], "give 13 to %d" % newest),
                       (["--opset", "17"], "--opset needs --onnx")]:
        out = tmp_path / ("bad%s" % len(argv))
        rc = cli.main(["export", "--model", "duc_hdc_resnet18", "--classes", "2",
                       "--random-weights", "--shape", "1,3,32,32", "--out", str(out)] + argv)
        err = capsys.readouterr().err
        assert rc == 2 and text in err, err
        assert len([line for line in err.splitlines() if line.startswith("error")]) == 1
        assert not list(tmp_path.glob("bad%s*" % len(argv)))


def test_cli_export_from_params_sidecar(tmp_path, capsys, caplog):
    from duc_hdc.models.sidecar import write_sidecar

    caplog.set_level(logging.INFO)

    net = get_model("duc_hdc_resnet18", classes=2, base_width=4, cell_width=4)
    params = str(tmp_path / "trained.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    rc = cli.main(["export", "--params", params, "--shape", "1,3,32,48", "--onnx",
                   "--out", str(tmp_path / "deploy")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "deploy-symbol.json" in out and "deploy.onnx" in out
    assert "symbol at 1x3x32x48" in out and "onnx at 1x3x32x48" in out
    # mxnet's exporter's own INFO lines (naming the temporary file) are not shown
    assert not [r for r in caplog.records if "ONNX file" in r.getMessage()
                or "Converting json" in r.getMessage()], caplog.text
    assert logging.root.manager.disable == logging.NOTSET  # logging is left as it was
    block = mx.gluon.SymbolBlock.imports(str(tmp_path / "deploy-symbol.json"), ["data"],
                                         str(tmp_path / "deploy-0000.params"))
    x = _x((1, 3, 32, 48), 7)
    np.testing.assert_allclose(block(x).asnumpy(), net(x).asnumpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", ["1,3,30,48", "0,3,64,64", "1,4,64,64", "1,3,64"])
def test_cli_export_rejects_bad_shape(capsys, shape):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--model", "duc_hdc_resnet18", "--classes", "2", "--random-weights",
                  "--shape", shape, "--out", "/nonexistent/x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--shape" in err and "multiples of 8" in err and "Traceback" not in err


def _image(h, w, seed):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _trained(classes=4, **overrides):
    """A tiny network with non-trivial weights and BatchNorm statistics (a stand-in for
    trained weights: random moving statistics make BatchNorm folding matter); ``overrides``
    for ``get_model``."""
    settings = dict(dict(base_width=8, variant="tusimple"), **overrides)
    mx.random.seed(0)  # the same weights whatever ran before (an INT8 agreement depends on them)
    net = get_model("duc_hdc_resnet18", classes=classes, **settings)
    rng = np.random.RandomState(0)
    for name, param in net.collect_params().items():
        if name.endswith("running_var"):
            param.set_data(mx.nd.array(rng.uniform(0.5, 2.0, param.shape)))
        elif name.endswith(("running_mean", "beta")):
            param.set_data(mx.nd.array(rng.normal(0, 0.1, param.shape)))
    return net


def test_export_loads_through_the_one_loader_with_the_same_labels(tmp_path):
    net = _trained()
    prefix = str(tmp_path / "deploy" / "tiny")
    result = export_model(net, prefix, "1,3,64,96", weights="trained.params", check=False)
    assert result["prefix"] == prefix and result["trained"]
    images = [_image(37, 69, seed=1), _image(64, 96, seed=2)]  # another size, the traced one
    want = [Segmenter(net, optimize=False).predict(im) for im in images]
    logits = [Segmenter(net, optimize=False).logits(im) for im in images]
    assert all(len(np.unique(w)) > 1 for w in want)  # not a constant map
    for artifact in (prefix, prefix + "-0000.params", prefix + "-symbol.json"):
        loaded = duc_hdc.load(artifact)
        assert loaded.config == net.config
        for optimize in (False, True):  # the plain network and the CPU default (fused)
            seg = Segmenter(loaded, optimize=optimize)
            for im, w, lg in zip(images, want, logits):
                got = seg.logits(im)
                # the fused graph (BatchNorm folded) rounds differently: 1e-3 there
                np.testing.assert_allclose(got, lg, atol=1e-3 if optimize else 1e-4)
                top2 = np.sort(lg, axis=0)[-2:]
                clear = top2[1] - top2[0] > 1e-3  # away from near-ties
                assert clear.mean() > 0.95
                np.testing.assert_array_equal(seg.predict(im)[clear], w[clear])
    with open(prefix + ".json") as f:
        assert json.load(f)["weights"] == "trained.params"


def test_int8_prefix_loads_through_the_one_loader(tmp_path):
    net = _trained()
    img = _image(40, 64, seed=3)
    calib = calibration_batch([img, _image(40, 64, seed=4)], net.normalization)
    qnet = quantize_net(net, calib)
    prefix = str(tmp_path / "int8" / "tiny")
    save_quantized(qnet, prefix)
    want = Segmenter(qnet).predict(img)
    fp32 = Segmenter(net).predict(img)
    for artifact in (prefix, prefix + "-0000.params", prefix + "-symbol.json"):
        loaded = duc_hdc.load(artifact)
        assert isinstance(loaded, InferenceNet) and loaded.kind == "int8"
        got = Segmenter(loaded).predict(img)
        np.testing.assert_array_equal(got, want)  # the same graph and ranges, reloaded
    assert (want == fp32).mean() > 0.8  # int8 labels follow the fp32 network (0.93 measured)


def test_out_is_a_prefix_or_a_folder(tmp_path, caplog):
    net = get_model("duc_hdc_resnet18", classes=2, base_width=4, cell_width=4)
    # a path ending with / is a folder (created): FOLDER/<model name>
    caplog.set_level(logging.INFO, logger="duc_hdc.inference.export")
    result = export_model(net, str(tmp_path / "new") + "/", (1, 3, 32, 32), check=False,
                          weights="w")
    assert result["prefix"] == str(tmp_path / "new" / "duc_hdc_resnet18")
    assert result["out_is"] == "folder"
    assert "exporting to prefix %s (--out %s/ is a folder)" % (result["prefix"],
                                                               tmp_path / "new") in caplog.text
    assert sorted(os.listdir(str(tmp_path / "new"))) == [
        "duc_hdc_resnet18-0000.params", "duc_hdc_resnet18-symbol.json", "duc_hdc_resnet18.json"]
    # an existing folder, no slash; a name given
    result = export_model(net, str(tmp_path / "new"), (1, 3, 32, 32), check=False,
                          weights="w", name="road")
    assert (result["prefix"], result["out_is"]) == (str(tmp_path / "new" / "road"), "folder")
    assert os.path.isfile(str(tmp_path / "new" / "road-symbol.json"))
    # anything else is the prefix itself
    result = export_model(net, str(tmp_path / "deploy"), (1, 3, 32, 32), check=False,
                          weights="w")
    assert (result["prefix"], result["out_is"]) == (str(tmp_path / "deploy"), "prefix")
    assert result["files"] == [str(tmp_path / "deploy") + s for s in ("-symbol.json",
                                                                      "-0000.params", ".json")]
    assert all(os.path.isfile(f) for f in result["files"])
    assert not any(n.startswith(("-", ".")) for n in os.listdir(str(tmp_path)))  # no hidden
    assert export_prefix(str(tmp_path / "m-symbol.json"), "x") == (str(tmp_path / "m"), "prefix")
    with pytest.raises(ValueError, match="--out: give a prefix"):
        export_prefix("", "x")


def test_exporting_untrained_weights_warns(tmp_path, caplog):
    net = get_model("duc_hdc_resnet18", classes=2, base_width=4, cell_width=4)
    caplog.set_level(logging.WARNING, logger="duc_hdc.inference.export")
    result = export_model(net, str(tmp_path / "random"), (1, 3, 32, 32), check=False)
    assert not result["trained"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "untrained weights (random initialization)" in \
        warnings[0].getMessage() and "--params FILE" in warnings[0].getMessage()
    with open(str(tmp_path / "random.json")) as f:
        assert json.load(f)["weights"] is None
    caplog.clear()
    export_model(net, str(tmp_path / "trained"), (1, 3, 32, 32), check=False, weights="w.params")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("shape, shown", [
    ("0,3,64,64", "0,3,64,64"), ((0, 3, 64, 64), "0,3,64,64"), ("1,3,30,48", "1,3,30,48"),
    ("1,1,64,64", "1,1,64,64"), ("1,3,0,64", "1,3,0,64"), ("1,3,-8,64", "1,3,-8,64"),
    ("1,3,64", "1,3,64"), ("a,3,64,64", "a,3,64,64"), ("-1,3,64,64", "-1,3,64,64")])
def test_bad_shape_names_the_option(tmp_path, shape, shown):
    net = get_model("duc_hdc_resnet18", classes=2, base_width=4, cell_width=4)
    message = ("--shape: expected N,3,H,W with N >= 1 and H, W positive multiples of 8, got %s"
               % shown)
    with pytest.raises(ShapeError) as info:
        export_model(net, str(tmp_path / "x"), shape, weights="w")
    assert str(info.value) == message and isinstance(info.value, ValueError)
    assert os.listdir(str(tmp_path)) == []  # refused before anything is written
    assert parse_shape("2,3,16,24") == (2, 3, 16, 24)
