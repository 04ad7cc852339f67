"""Export: symbol JSON + params reload with SymbolBlock and Module, ONNX runs in onnxruntime."""
import json

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from duc_hdc import cli, get_model
from duc_hdc.inference.export import export_model


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


def test_cli_export_from_params_sidecar(tmp_path, capsys):
    from duc_hdc.models.sidecar import write_sidecar

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
