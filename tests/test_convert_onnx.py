"""ONNX import: the release graph exported by mxnet's ONNX exporter converts back exactly."""
import contextlib
import io

import mxnet as mx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from duc_hdc import cli
from duc_hdc.hub.convert import ConversionError, convert_onnx
import duc_hdc
from test_convert import H, W, _random_release_weights  # noqa: F401  (same random graph)

CLASSES = 19


@pytest.fixture(scope="module")
def exported(tmp_path_factory, reference_symbol_path):
    """The reference graph's DUC output with random weights (non-trivial BatchNorm), in ONNX."""
    out, np_args, np_aux = _random_release_weights(reference_symbol_path)
    args = {k: mx.nd.array(v) for k, v in np_args.items()}
    aux = {k: mx.nd.array(v) for k, v in np_aux.items()}
    root = tmp_path_factory.mktemp("onnx")
    path = str(root / "release.onnx")
    mx.onnx.export_model(out, dict(args, **aux), [(1, 3, H, W)], [np.float32], path)
    # converted back once, through the command line
    params = str(root / "from_onnx.params")
    argv = ["convert", "onnx", "--onnx", path, "--classes", str(CLASSES), "--out", params]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli.main(argv)
    return dict(path=path, out=out, args=args, aux=aux, params=params, rc=rc,
                printed=printed.getvalue())


def test_converted_onnx_computes_what_the_original_graph_computes(exported):
    assert exported["rc"] == 0
    assert "ResNet-101, 19 classes, cell width 2" in exported["printed"]
    params = exported["params"]
    x = np.random.RandomState(1).normal(0, 50, (1, 3, H, W)).astype(np.float32)
    bound = dict(exported["args"], data=mx.nd.array(x))
    ex = exported["out"].bind(mx.cpu(), bound, grad_req="null", aux_states=exported["aux"])
    raw = ex.forward(is_train=False)[0].asnumpy()  # (1, 19*16, H/8, W/8), release order
    r, h, w = 4, H // 8, W // 8
    want = raw.reshape(1, CLASSES, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(
        1, CLASSES, h * r, w * r)
    net = duc_hdc.load(params)
    assert net.config["dilations"][1] == [5, 9, 17] and net.config["aspp_rates"] == [6, 12, 18,
                                                                                    24]
    got = net(mx.nd.array(x)).asnumpy()
    assert got.shape == (1, CLASSES, H // 2, W // 2)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel


def _rename(model, old, new):
    for t in model.graph.initializer:
        if t.name == old:
            t.name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for value in model.graph.input:
        if value.name == old:
            value.name = new


def test_names_are_read_leniently(exported, tmp_path):
    """Other exporters' spellings: arg:/aux: prefixes, renamed BatchNorm statistics, named Conv
    nodes, weights behind Identity nodes, constants that are not parameters, another eps."""
    clean = exported["params"]
    model = onnx.load(exported["path"])
    bn_nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    for node in bn_nodes:
        gamma, beta, mean, var = node.input[1:]
        base = gamma[:-len("_gamma")]
        _rename(model, gamma, "arg:" + gamma)
        _rename(model, beta, "arg:" + beta)
        _rename(model, mean, "aux:%s_running_mean" % base)
        _rename(model, var, "aux:%s_running_var" % base)
        node.attribute.remove(next(a for a in node.attribute if a.name == "epsilon"))
        node.attribute.extend([helper.make_attribute("epsilon", 1e-5)])
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for node in convs:
        node.name = node.input[1][:-len("_weight")]
    # the first conv's weight arrives through an Identity node
    first = convs[0]
    model.graph.node.insert(0, helper.make_node("Identity", [first.input[1]], ["w_routed"]))
    first.input[1] = "w_routed"
    # constants that are no parameters: a Reshape target and a float scale
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([1, 19, -1], np.int64), "reshape_shape"),
        numpy_helper.from_array(np.array([2.0], np.float32), "some_scale")])
    lenient = str(tmp_path / "lenient.params")
    config = convert_onnx(model, CLASSES, lenient)
    assert config["bn_eps"] == 1e-5  # what the graph says, kept
    a, b = mx.nd.load(clean), mx.nd.load(lenient)
    assert sorted(a) == sorted(b) and len(a) > 500
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=key)
    # epsilons that differ between layers cannot be represented
    eps = next(a for a in bn_nodes[3].attribute if a.name == "epsilon")
    eps.f = 1e-3
    with pytest.raises(ConversionError, match="epsilons differ"):
        convert_onnx(model, CLASSES, str(tmp_path / "eps.params"))


def test_missing_and_misshapen_arrays_are_named(exported, tmp_path):
    model = onnx.load(exported["path"])
    # a BatchNorm dropped from the graph (e.g. folded by an optimizer): its arrays are missing
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization"
              and n.name == "conv4_7_3x3/bn")
    model.graph.node.remove(bn)
    with pytest.raises(ConversionError, match=r"needs release array conv4_7_3x3/bn_gamma"):
        convert_onnx(model, CLASSES, str(tmp_path / "x.params"))
    model.graph.node.append(bn)  # appends a copy
    bn = model.graph.node[-1]
    # an input that is no initializer
    bn.input[4] = "nowhere"
    with pytest.raises(ConversionError, match=r"'conv4_7_3x3/bn' takes its variance from "
                                              r"'nowhere'"):
        convert_onnx(model, CLASSES, str(tmp_path / "x.params"))
    bn.input[4] = "conv4_7_3x3/bn_moving_var"
    # a weight of the wrong shape
    for i, t in enumerate(model.graph.initializer):
        if t.name == "conv2_1_3x3_weight":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                np.zeros((64, 64, 1, 1), np.float32), "conv2_1_3x3_weight"))
    with pytest.raises(ConversionError, match=r"conv2_1_3x3_weight has shape \(64, 64, 1, 1\)"):
        convert_onnx(model, CLASSES, str(tmp_path / "x.params"))
    # a wrong class count is refused by the head's channel count
    with pytest.raises(ConversionError, match="classes=20"):
        convert_onnx(exported["path"], 20, str(tmp_path / "x.params"))


def test_cli_convert_onnx_errors(tmp_path, capsys):
    rc = cli.main(["convert", "onnx", "--onnx", str(tmp_path / "none.onnx"), "--classes", "19",
                   "--out", str(tmp_path / "x.params")])
    assert rc == 2
    assert "none.onnx not found" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    rc = cli.main(["convert", "onnx", "--onnx", str(bad), "--classes", "19", "--out",
                   str(tmp_path / "x.params")])
    assert rc == 2
    assert "bad.onnx" in capsys.readouterr().err
