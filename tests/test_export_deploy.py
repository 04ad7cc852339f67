"""An export used without duc_hdc: a fresh process that never imports it loads the symbol JSON
(SymbolBlock and Module) and the ONNX file (onnxruntime), prepares an image from the README's
words only (RGB, (x - mean) / std on 0..255 from PREFIX.json, zero padding at the bottom and
right to multiples of 8, logits cropped to ceil(H / cell_width)) and gets predict's
probabilities; the ONNX output is named ``logits`` whatever networks the exporting process
built before."""
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx

from duc_hdc import get_model
from duc_hdc.inference.export import export_model
from duc_hdc.inference.segmenter import Segmenter
from test_export import _trained  # a tiny network with non-trivial BatchNorms

_PLAIN = r"""
import json, sys
import cv2, mxnet as mx, numpy as np, onnxruntime as ort

prefix, image, out = sys.argv[1:4]
with open(prefix + ".json") as f:
    model = json.load(f)["model"]
mean = np.array(model["mean"], np.float32)[:, None, None]
std = np.array(model["std"] or (1, 1, 1), np.float32)[:, None, None]
cw = model["cell_width"]
rgb = np.load(image)
h, w = rgb.shape[:2]
x = (rgb.astype(np.float32).transpose(2, 0, 1) - mean) / std
x = np.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8)))[None]
x = np.concatenate([x, x])  # batch 2

block = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
sym, args, auxs = mx.model.load_checkpoint(prefix, 0)
mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
mod.bind(data_shapes=[("data", x.shape)], for_training=False)
mod.set_params(args, auxs)
mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
sess = ort.InferenceSession(prefix + ".onnx", providers=["CPUExecutionProvider"])
outs = dict(symbolblock=block(mx.nd.array(x)).asnumpy(), module=mod.get_outputs()[0].asnumpy(),
            onnx=sess.run(["logits"], {"data": x})[0])
probs = {}
for name, logits in outs.items():
    s = logits[1, :, :-(-h // cw), :-(-w // cw)]
    e = np.exp(s - s.max(0, keepdims=True))
    e /= e.sum(0, keepdims=True)
    probs[name] = cv2.resize(np.ascontiguousarray(e.transpose(1, 2, 0)), (w, h),
                             interpolation=cv2.INTER_LINEAR).reshape(h, w, -1).transpose(2, 0, 1)
assert "duc_hdc" not in sys.modules
np.savez(out, **probs)
"""


def test_export_runs_without_duc_hdc_as_the_readme_says(tmp_path):
    get_model("duc_hdc_resnet18", classes=3, base_width=4)  # an earlier network in the process
    for variant in ("tusimple", "v1s"):  # std null (the release) and ImageNet mean / std
        net = _trained(5, base_width=4, cell_width=4, variant=variant)
        prefix = str(tmp_path / variant)
        export_model(net, prefix, (1, 3, 32, 48), onnx=True, check=False, weights="w.params")
        rgb = np.random.RandomState(1).randint(0, 256, (37, 61, 3)).astype(np.uint8)
        np.save(str(tmp_path / "image.npy"), rgb)
        out = str(tmp_path / ("probs_%s.npz" % variant))
        run = subprocess.run([sys.executable, "-c", _PLAIN, prefix, str(tmp_path / "image.npy"),
                              out], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        want = Segmenter(net).logits(rgb)
        got = np.load(out)
        for runtime in ("symbolblock", "module", "onnx"):
            np.testing.assert_allclose(got[runtime], want, atol=1e-4, err_msg=runtime)


def test_onnx_output_is_logits_and_export_check_shows_no_mxnet_warning(tmp_path):
    get_model("duc_hdc_resnet18", classes=3, base_width=4)  # names the next one duchdcN, N > 0
    net = get_model("duc_hdc_resnet18", classes=5, base_width=4)
    prefix = str(tmp_path / "x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(net, prefix, (1, 3, 32, 32), onnx=True, weights="w.params")
    assert [str(w.message) for w in caught if "Cannot decide type" in str(w.message)] == []
    model = onnx.load(prefix + ".onnx")
    assert [o.name for o in model.graph.output] == ["logits"]
    assert [i.name for i in model.graph.input] == ["data"]
    with open(prefix + ".json") as f:
        assert json.load(f)["model"]["classes"] == 5


def test_cli_bad_shape_is_one_line_naming_the_option_once(capsys):
    import pytest

    from duc_hdc import cli

    with pytest.raises(SystemExit):
        cli.main(["export", "--model", "duc_hdc_resnet18", "--classes", "2", "--random-weights",
                  "--shape", "1,3,30,48", "--out", "/nonexistent/x"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("duc-hdc export: error: argument --shape: expected N,3,H,W with N >= 1 and "
                    "H, W positive multiples of 8, got 1,3,30,48")
