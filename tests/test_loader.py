"""The one loader: every artifact the project writes loads into predict with the same labels;
wrong or partial artifacts get one message naming the file."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
import yaml

import duc_hdc
from duc_hdc import cli
from duc_hdc.config import load_config
from duc_hdc.inference.graphs import calibration_batch, quantize_net, save_quantized
from duc_hdc.hub import zoo
from duc_hdc.inference.export import export_model
from duc_hdc.inference.loader import load
from duc_hdc.inference.segmenter import Segmenter
from duc_hdc.models.sidecar import SidecarError, sidecar_path, write_sidecar

SETTINGS = dict(classes=5, base_width=8)


def _net(seed=0):
    mx.random.seed(seed)
    np.random.seed(seed)
    net = duc_hdc.get_model("duc_hdc_resnet18", **SETTINGS)
    # non-trivial BatchNorm statistics, so that a loader dropping them would be caught
    for name, param in net.collect_params().items():
        if name.endswith("running_mean"):
            param.set_data(mx.nd.random.uniform(-0.2, 0.2, param.shape))
        elif name.endswith("running_var"):
            param.set_data(mx.nd.random.uniform(0.5, 1.5, param.shape))
    return net


def _image():
    rng = np.random.RandomState(3)
    return rng.randint(0, 256, (40, 72, 3)).astype(np.uint8)


def _labels(net):
    return Segmenter(net, optimize=False).predict(_image())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A network and the artifacts the project writes for it."""
    root = tmp_path_factory.mktemp("artifacts")
    net = _net()
    want = _labels(net)
    final = str(root / "final.params")
    net.save_parameters(final)
    write_sidecar(final, net.config, dataset="cityscapes")
    ckpt = str(root / "ckpt-00000004.params")
    net.save_parameters(ckpt)
    with open(str(root / "ckpt-00000004.json"), "w") as f:  # a checkpoint's own JSON
        json.dump(dict(iteration=4, model=net.config, config={}), f)
    prefix = str(root / "export" / "tiny")
    export_model(net, prefix, (1, 3, 32, 48), check=False)
    bare = str(root / "bare.params")  # weights without a sidecar
    net.save_parameters(bare)
    recipe = load_config("synthetic", ["model.name=duc_hdc_resnet18", "model.classes=5",
                                       "model.base_width=8", "model.cell_width=2",
                                       "model.variant=v1s", "model.aspp_rates=[6,12,18,24]",
                                       "model.dilations=hdc", "model.head=duc"])
    recipe_path = str(root / "recipe.yaml")
    with open(recipe_path, "w") as f:
        yaml.safe_dump(recipe, f)
    return dict(net=net, want=want, final=final, ckpt=ckpt, prefix=prefix, bare=bare,
                recipe=recipe_path, root=str(root))


@pytest.mark.parametrize("kind", ["final", "ckpt", "prefix", "prefix-params", "prefix-symbol",
                                  "recipe", "name"])
def test_every_artifact_loads_with_the_same_labels(trained, kind):
    t = trained
    args = {"final": dict(model=t["final"]), "ckpt": dict(model=t["ckpt"]),
            "prefix": dict(model=t["prefix"]),
            "prefix-params": dict(model=t["prefix"] + "-0000.params"),
            "prefix-symbol": dict(model=t["prefix"] + "-symbol.json"),
            "recipe": dict(config=t["recipe"], params=t["bare"]),
            "name": dict(model="duc_hdc_resnet18", params=t["bare"],
                         overrides=dict(base_width=8), classes=5)}[kind]
    net = load(**args)
    assert net.classes == 5 and net.cell_width == 2
    assert net.normalization == t["net"].normalization
    np.testing.assert_array_equal(_labels(net), t["want"])


def test_cli_predict_on_every_artifact(trained, tmp_path):
    """predict --model ARTIFACT for the export given three ways: same label files."""
    import cv2

    t = trained
    image = str(tmp_path / "img.png")
    cv2.imwrite(image, cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    for i, model in enumerate([t["final"], t["prefix"], t["prefix"] + "-0000.params",
                               t["prefix"] + "-symbol.json"]):
        out = str(tmp_path / ("o%d" % i))
        assert cli.main(["predict", image, "--model", model, "--out", out,
                         "--no-progress"]) == 0
        got = cv2.imread(os.path.join(out, "img_trainIds.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, t["want"])


def test_int8_prefix_loads(trained, tmp_path):
    t = trained
    calib = calibration_batch([_image()], t["net"].normalization)
    prefix = str(tmp_path / "int8")
    save_quantized(quantize_net(t["net"], calib), prefix)
    for name in (prefix, prefix + "-0000.params", prefix + "-symbol.json"):
        qnet = load(name)
        assert qnet.kind == "int8" and qnet.classes == 5
        agree = np.mean(Segmenter(qnet).predict(_image()) == t["want"])
        assert agree > 0.8, agree


def _damage(src, dst, how):
    data = bytearray(open(src, "rb").read())
    if how == "truncate":
        data = data[:len(data) // 2]
    open(dst, "wb").write(bytes(data))
    side = sidecar_path(src)
    if os.path.exists(side):
        with open(side) as f, open(sidecar_path(dst), "w") as g:
            g.write(f.read())


def test_truncated_params_name_the_file(trained, tmp_path):
    bad = str(tmp_path / "cut.params")
    _damage(trained["final"], bad, "truncate")
    with pytest.raises(ValueError, match="cut.params is not a complete MXNet parameter file"):
        load(bad)


def test_non_finite_weights_are_refused(trained, tmp_path):
    net = _net()
    param = list(net.collect_params().values())[3]
    data = param.data().asnumpy()
    data.flat[0] = np.nan
    param.set_data(mx.nd.array(data))
    path = str(tmp_path / "nan.params")
    net.save_parameters(path)
    write_sidecar(path, net.config)
    with pytest.raises(ValueError, match="nan.params holds non-finite values"):
        load(path)


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ('"a string"', "is not a duc-hdc model sidecar"),
    ('{"format": "duc-hdc-model"}', "is not a duc-hdc model sidecar"),
    ('{"model": {"depth": 18, "classes": 5, "wings": 2}}', "unknown model setting"),
])
def test_bad_sidecars_name_the_file(trained, tmp_path, content, message):
    path = str(tmp_path / "w.params")
    trained["net"].save_parameters(path)
    with open(str(tmp_path / "w.json"), "w") as f:
        f.write(content)
    with pytest.raises(ValueError) as info:
        load(path)
    assert "w.json" in str(info.value) and message in str(info.value)


def test_missing_sidecar_and_mismatched_weights(trained, tmp_path):
    with pytest.raises(SidecarError, match="bare.json is missing .*bare.params"):
        load(trained["bare"])
    # weights of another width: names the parameter and both shapes, no raw MXNet text
    with pytest.raises(ValueError) as info:
        load("duc_hdc_resnet18", params=trained["bare"], classes=5)
    text = str(info.value)
    assert "bare.params does not fit the model: parameter" in text and "ParameterDict" not in text
    # an array the network does not have
    extra = str(tmp_path / "extra.params")
    arrays = {k: v.data() for k, v in trained["net"]._collect_params_with_prefix().items()}
    arrays["head_extra_weight"] = mx.nd.zeros((1,))
    mx.nd.save(extra, arrays)
    write_sidecar(extra, trained["net"].config)
    with pytest.raises(ValueError, match="array head_extra_weight in the file is no parameter"):
        load(extra)


def test_config_without_weights_is_refused(trained, capsys):
    with pytest.raises(ValueError, match="give the trained weights with --params"):
        load(config=trained["recipe"])
    rc = cli.main(["evaluate", "--config", trained["recipe"], "--rec", "x.rec"])
    assert rc == 2 and "give the trained weights with --params" in capsys.readouterr().err


def test_pretrained_honours_the_sidecar(trained, tmp_path, monkeypatch):
    """get_model(pretrained=True) builds what the weights' sidecar says (e.g. bn_eps)."""
    net = _net()
    path = str(tmp_path / "zoo.params")
    net.save_parameters(path)
    config = dict(net.config, bn_eps=1e-3)
    write_sidecar(path, config)
    import dataclasses

    entry = dataclasses.replace(zoo.get_entry("duc_hdc_resnet101_cityscapes_tusimple"),
                                name="test", model="duc_hdc_resnet18",
                                classes=net.config["classes"],
                                cell_width=net.config["cell_width"])
    monkeypatch.setattr(zoo, "weights_for_model", lambda name, **kw: (entry, path))
    got = duc_hdc.get_model("duc_hdc_resnet18", pretrained=True)
    eps = {b._kwargs["eps"] for b in _batchnorms(got)}
    assert eps == {1e-3}
    assert got.config["bn_eps"] == 1e-3
    with pytest.raises(ValueError, match="bn_eps=0.001; bn_eps=0.01 does not fit"):
        duc_hdc.get_model("duc_hdc_resnet18", pretrained=True, bn_eps=1e-2)


def _batchnorms(block):
    out = []
    for child in block._children.values():
        if isinstance(child, mx.gluon.nn.BatchNorm):
            out.append(child)
        out.extend(_batchnorms(child))
    return out


def test_model_settings_given_with_an_artifact_must_match_it(trained, tmp_path, capsys):
    """--classes / --base-width with a trained artifact were ignored without a word."""
    t = trained
    for model in (t["final"], t["prefix"]):
        with pytest.raises(ValueError, match=r"--classes 19 \(it has 5\); drop that option"):
            load(model, classes=19)
        assert load(model, classes=5).classes == 5  # the artifact's own value: accepted
        with pytest.raises(ValueError, match=r"--base-width 16 \(it has 8\), --classes 19 "
                                             r"\(it has 5\); drop those options"):
            load(model, classes=19, overrides=dict(base_width=16))
    rc = cli.main(["predict", "x.png", "--model", t["final"], "--classes", "7", "--out",
                   str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--classes 7 (it has 5)" in err, err
