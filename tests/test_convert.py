"""The original release's checkpoints: conversion and exact parity with the original graph."""
import json
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
