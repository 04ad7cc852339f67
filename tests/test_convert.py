"""The original release's checkpoints: conversion and exact parity with the original graph."""
import json
import re
import shutil

import mxnet as mx
import numpy as np
import pytest

from duc_hdc import cli
from duc_hdc.hub.convert import (ConversionError, architecture_from_symbol_json, cell_width_for,
                             convert_tusimple, map_release_arrays)
import duc_hdc
from duc_hdc.models.sidecar import sidecar_path

H, W = 64, 96  # non-square, multiples of 8


def _random_release_weights(symbol_path, seed=0):
    """The reference graph's DUC output with random weights and non-trivial BatchNorm."""
    out = mx.sym.load(symbol_path).get_internals()["fc1_cityscapes_output"]
    arg_shapes, _, aux_shapes = out.infer_shape(data=(1, 3, H, W))
    rng = np.random.RandomState(seed)
    args, aux = {}, {}
    for name, shape in zip(out.list_arguments(), arg_shapes):
        if name == "data":
            continue
        if name.endswith("weight"):
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, bias
            value = rng.normal(0, 0.1, shape)
        args[name] = value.astype(np.float32)
    for name, shape in zip(out.list_auxiliary_states(), aux_shapes):
        value = rng.normal(0, 0.1, shape) if name.endswith("mean") else rng.uniform(0.5, 2, shape)
        aux[name] = value.astype(np.float32)
    return out, args, aux


@pytest.fixture(scope="module")
def release_checkpoint(tmp_path_factory, reference_symbol_path):
    """A checkpoint in the release's own format: P-symbol.json + P-0000.params (arg:/aux:)."""
    root = tmp_path_factory.mktemp("release")
    prefix = str(root / "cityscapes_duc_hdc")
    out, args, aux = _random_release_weights(reference_symbol_path)
    shutil.copy(reference_symbol_path, prefix + "-symbol.json")
    saved = {"arg:" + k: mx.nd.array(v) for k, v in args.items()}
    saved.update({"aux:" + k: mx.nd.array(v) for k, v in aux.items()})
    mx.nd.save(prefix + "-0000.params", saved)
    return dict(prefix=prefix, out=out, args=args, aux=aux)


def test_converted_network_computes_what_the_original_graph_computes(release_checkpoint,
                                                                     tmp_path):
    ck = release_checkpoint
    params = str(tmp_path / "converted.params")
    config = convert_tusimple(ck["prefix"], 0, 19, params)
    assert config["cell_width"] == 2 and config["depth"] == 101
    x = np.random.RandomState(1).normal(0, 50, (1, 3, H, W)).astype(np.float32)
    bound = {k: mx.nd.array(v) for k, v in ck["args"].items()}
    bound["data"] = mx.nd.array(x)
    ex = ck["out"].bind(mx.cpu(), bound, grad_req="null",
                        aux_states={k: mx.nd.array(v) for k, v in ck["aux"].items()})
    raw = ex.forward(is_train=False)[0].asnumpy()  # (1, 19*16, H/8, W/8), release order
    r, h, w = 4, H // 8, W // 8
    # the reference README: reshape to (19, r, r, H/8, W/8), transpose to (19, H/8, r, W/8, r)
    want = raw.reshape(1, 19, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(1, 19, h * r, w * r)
    net = duc_hdc.load(params)
    got = net(mx.nd.array(x)).asnumpy()
    assert got.shape == (1, 19, H // 2, W // 2)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    net.hybridize(static_alloc=True, static_shape=True)
    rel = np.abs(net(mx.nd.array(x)).asnumpy() - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    # the sidecar rebuilds the same model; get_model with the recipe name loads it too
    with open(sidecar_path(params)) as f:
        assert json.load(f)["model"]["dilations"][1] == [5, 9, 17]
    from duc_hdc import get_model
    recipe = get_model("duc_hdc_resnet101_cityscapes", classes=19, cell_width=2)
    recipe.load_parameters(params)
    rel = np.abs(recipe(mx.nd.array(x)).asnumpy() - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel


def test_cli_convert_tusimple(release_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "cli.params")
    rc = cli.main(["convert", "tusimple", "--prefix", release_checkpoint["prefix"],
                   "--epoch", "0", "--classes", "19", "--out", out])
    assert rc == 0
    assert "cell width 2" in capsys.readouterr().out
    rc = cli.main(["convert", "tusimple", "--prefix", release_checkpoint["prefix"],
                   "--epoch", "3", "--classes", "19", "--out", out])
    assert rc == 2
    assert "cityscapes_duc_hdc-0003.params not found" in capsys.readouterr().err


def _arrays(ck):
    arrays = dict(ck["args"])
    arrays.update(ck["aux"])
    return arrays


def test_missing_array_is_named(release_checkpoint, reference_symbol_path):
    arrays = _arrays(release_checkpoint)
    del arrays["conv4_7_3x3/bn_moving_var"]
    arch = architecture_from_symbol_json(reference_symbol_path)
    with pytest.raises(ConversionError, match=r"conv4_7_3x3/bn_moving_var"):
        map_release_arrays(arrays, arch, 19)


def test_extra_array_is_named(release_checkpoint, reference_symbol_path):
    arrays = _arrays(release_checkpoint)
    arrays["fc2_extra_weight"] = np.zeros((3,), np.float32)
    arch = architecture_from_symbol_json(reference_symbol_path)
    with pytest.raises(ConversionError, match="map to no parameter, first: fc2_extra_weight"):
        map_release_arrays(arrays, arch, 19)


def test_shape_mismatch_is_named(release_checkpoint, reference_symbol_path):
    arrays = _arrays(release_checkpoint)
    arrays["conv2_1_3x3_weight"] = np.zeros((64, 64, 1, 1), np.float32)
    arch = architecture_from_symbol_json(reference_symbol_path)
    with pytest.raises(ConversionError, match=r"conv2_1_3x3_weight has shape \(64, 64, 1, 1\)"):
        map_release_arrays(arrays, arch, 19)


def test_cell_width_is_inferred_from_the_head():
    assert cell_width_for(19 * 16, 19) == 2
    assert cell_width_for(19 * 64, 19) == 1
    assert cell_width_for(21, 21) == 8
    with pytest.raises(ConversionError, match="not a multiple of classes=20"):
        cell_width_for(304, 20)
    with pytest.raises(ConversionError, match="not r\\*r"):
        cell_width_for(19 * 8, 19)


def test_any_head_prefix_is_accepted(tmp_path, reference_symbol_path):
    with open(reference_symbol_path) as f:
        text = f.read()
    renamed = tmp_path / "voc-symbol.json"
    renamed.write_text(text.replace("fc1_cityscapes", "fc1_voc"))
    arch = architecture_from_symbol_json(str(renamed))
    assert arch["head_name"] == "voc" and arch["aspp_rates"] == [6, 12, 18, 24]
    assert arch["head_channels"] == 304 and arch["depth"] == 101


# ---------------------------------------------------------------------------------- structure
def _altered_release(tmp_path, release_checkpoint, node_name, key, value):
    """The release checkpoint with one attribute of one node of its graph changed."""
    with open(release_checkpoint["prefix"] + "-symbol.json") as f:
        graph = json.load(f)
    nodes = [n for n in graph["nodes"] if n["name"] == node_name]
    assert len(nodes) == 1, node_name
    attrs = nodes[0].setdefault("attrs", {})
    if value is None:
        attrs.pop(key)
    else:
        attrs[key] = value
    prefix = str(tmp_path / "altered")
    with open(prefix + "-symbol.json", "w") as f:
        json.dump(graph, f)
    (tmp_path / "altered-0000.params").symlink_to(release_checkpoint["prefix"] + "-0000.params")
    return prefix


def test_reference_graph_structure_matches_the_built_network(reference_symbol_path):
    from duc_hdc.hub.convert import check_release_structure

    counts = check_release_structure(reference_symbol_path, classes=19)
    # every layer of the original graph was compared, not a subset
    with open(reference_symbol_path) as f:
        ops = [n["op"] for n in json.load(f)["nodes"]]
    assert counts == {"Convolution": ops.count("Convolution"), "BatchNorm": ops.count("BatchNorm"),
                      "Pooling": ops.count("Pooling")}
    assert counts == {"Convolution": 110, "BatchNorm": 106, "Pooling": 1}


@pytest.mark.parametrize("node_name, key, value, message", [
    # the stem's first conv with stride 1: every array still has its shape
    ("conv1_1_3x3_s2", "stride", "(1, 1)", r"stride is \(1, 1\) in the release graph but \(2, 2\)"),
    # a stage-3 block dilated although HDC dilates stages 4 and 5 only
    ("conv3_2_3x3", "dilate", "(2, 2)", r"dilate is \(2, 2\) in the release graph but \(1, 1\)"),
    # a stage-5 block whose dilation no longer matches its padding (the built one pads = dilates)
    ("conv5_2_3x3", "dilate", "(7, 7)", r"pad is \(9, 9\) in the release graph but \(7, 7\)"),
    ("conv4_7_3x3/bn", "eps", "1e-05", r"eps is 1e-05 in the release graph but 1e-06"),
    ("pool1_3x3_s2", "pooling_convention", "full",
     r"pooling_convention is 'full' in the release graph but 'valid'"),
    ("conv2_1_1x1_reduce/bn", "fix_gamma", "True", r"fix_gamma is True in the release graph"),
    ("conv4_2_1x1_increase", "pad", "(1, 1)", r"pad is \(1, 1\) in the release graph but \(0, 0\)"),
    ("fc1_cityscapes_c2", "stride", "(2, 2)", r"stride is \(2, 2\) in the release graph"),
])
def test_structure_mismatch_names_the_release_node(release_checkpoint, tmp_path, node_name, key,
                                                   value, message):
    prefix = _altered_release(tmp_path, release_checkpoint, node_name, key, value)
    out = tmp_path / "converted.params"
    with pytest.raises(ConversionError, match=r"node '%s' \(\w+\): %s" % (re.escape(node_name),
                                                                            message)) as info:
        convert_tusimple(prefix, 0, 19, str(out))
    assert prefix + "-symbol.json" in str(info.value)
    assert not out.exists()


def test_one_epsilon_for_the_whole_graph_is_adopted(release_checkpoint, tmp_path):
    """A release graph whose BatchNorms all use another epsilon converts with that epsilon."""
    with open(release_checkpoint["prefix"] + "-symbol.json") as f:
        text = f.read()
    assert '"eps": "1e-06"' in text and '"eps": "2e-05"' not in text
    prefix = str(tmp_path / "eps")
    with open(prefix + "-symbol.json", "w") as f:
        f.write(text.replace('"eps": "1e-06"', '"eps": "2e-05"'))
    (tmp_path / "eps-0000.params").symlink_to(release_checkpoint["prefix"] + "-0000.params")
    config = convert_tusimple(prefix, 0, 19, str(tmp_path / "eps.params"))
    assert config["bn_eps"] == 2e-05
    net = duc_hdc.load(str(tmp_path / "eps.params"))
    assert net.backbone.bn1._kwargs["eps"] == 2e-05
