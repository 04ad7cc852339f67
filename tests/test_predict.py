"""Segmenter: the release's whole-image protocol, sliding windows, multi-scale + flip, files."""
import hashlib
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from duc_hdc import cli, get_model
from duc_hdc.hub import zoo
from duc_hdc.models.sidecar import write_sidecar
from duc_hdc.inference.segmenter import Segmenter, expand_inputs, read_image

K = 5  # classes of the tiny networks


def _net(**kw):
    settings = dict(classes=K, base_width=8)
    settings.update(kw)
    return get_model("duc_hdc_resnet18", **settings)


def _image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _softmax(x):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _up(probs, h, w):
    """Bilinear resize of (C, h', w') to (C, h, w), channel by channel (independent of the
    multi-channel path the library takes)."""
    return np.stack([cv2.resize(np.ascontiguousarray(p), (w, h), interpolation=cv2.INTER_LINEAR)
                     for p in probs])


def _normalized(net, img):
    norm = net.normalization
    x = img.astype(np.float32) - np.array(norm["mean"], np.float32)
    if norm["std"] is not None:
        x /= np.array(norm["std"], np.float32)
    return x.transpose(2, 0, 1)


def _raw(net, chw):
    return net(mx.nd.array(chw[None])).asnumpy()[0]


@pytest.mark.parametrize("variant", ["tusimple", "v1s"])  # std None / ImageNet std
def test_whole_image_follows_the_release_protocol(variant):
    net = _net(variant=variant)
    img = _image(37, 69)  # neither side a multiple of 8
    # by hand: normalize, pad bottom/right with the mean (= 0 after normalization) to 40x72,
    # run, crop ceil(37/2) x ceil(69/2) logit cells, softmax, bilinear to 37x69
    x = np.zeros((3, 40, 72), np.float32)
    x[:, :37, :69] = _normalized(net, img)
    want = _up(_softmax(_raw(net, x))[:, :19, :35], 37, 69)
    # the protocol itself, on the plain network
    got = Segmenter(net, optimize=False).logits(img)
    assert got.shape == (K, 37, 69) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the default CPU path runs the fused graph (BatchNorm folded, MKLDNN fusion): the same
    # probabilities up to float reassociation
    seg = Segmenter(net)
    got = seg.logits(img)
    np.testing.assert_allclose(got, want, atol=1e-3)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-5)
    pred = seg.predict(img)
    assert pred.dtype == np.uint8 and pred.shape == (37, 69)
    np.testing.assert_array_equal(pred, got.argmax(axis=0))
    top2 = np.sort(want, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4  # away from near-ties between two classes
    np.testing.assert_array_equal(pred[clear], want.argmax(axis=0)[clear])
    # padding with anything but the mean changes the answer: the protocol is pinned down
    x[:, 37:, :] = 1.0
    assert np.abs(_up(_softmax(_raw(net, x))[:, :19, :35], 37, 69) - got).max() > 1e-4


@pytest.mark.parametrize("size", [(40, 72), (9, 13), (1, 1), (57, 8)])
def test_any_input_size(size):
    seg = Segmenter(_net(cell_width=4))
    pred = seg.predict(_image(*size, seed=3))
    assert pred.shape == size and pred.dtype == np.uint8 and pred.max() < K


def test_sliding_window_averages_overlapping_windows():
    net = _net()
    img = _image(37, 69, seed=1)
    # crop 24x40, stride 16: rows start at 0, 16 (-> padded height 40), columns at 0, 16, 32
    # (-> padded width 72); logits are averaged where windows overlap
    x = np.zeros((3, 40, 72), np.float32)
    x[:, :37, :69] = _normalized(net, img)
    total = np.zeros((K, 20, 36), np.float32)
    count = np.zeros((20, 36), np.float32)
    for y in (0, 16):
        for x0 in (0, 16, 32):
            total[:, y // 2:y // 2 + 12, x0 // 2:x0 // 2 + 20] += _raw(net, x[:, y:y + 24,
                                                                               x0:x0 + 40])
            count[y // 2:y // 2 + 12, x0 // 2:x0 // 2 + 20] += 1
    assert count.min() == 1 and count.max() == 6  # overlaps really happen
    want = _up(_softmax(total / count)[:, :19, :35], 37, 69)
    got = Segmenter(net, mode="sliding", crop_size=(24, 40), stride=16).logits(img)
    np.testing.assert_allclose(got, want, atol=1e-5)
    batched = Segmenter(net, mode="sliding", crop_size=(24, 40), stride=16, batch_size=4)
    np.testing.assert_allclose(batched.logits(img), want, atol=1e-5)
    # one window covering the padded image is the whole-image protocol
    one = Segmenter(net, mode="sliding", crop_size=(40, 72)).logits(img)
    np.testing.assert_allclose(one, Segmenter(net).logits(img), atol=1e-5)
    # an image smaller than the window is padded to it
    small = Segmenter(net, mode="sliding", crop_size=(24, 40)).predict(_image(10, 30))
    assert small.shape == (10, 30)


def test_multiscale_and_flip_average_the_single_passes():
    net = _net()
    img = _image(40, 72, seed=2)
    seg = Segmenter(net, scales=(0.75, 1.0, 1.25), flip=True, batch_size=2)
    got = seg.logits(img)
    passes = []
    for s in (0.75, 1.0, 1.25):
        single = Segmenter(net, scales=(s,))
        passes.append(single.logits(img))
        passes.append(single.logits(img[:, ::-1].copy())[:, :, ::-1])
    np.testing.assert_allclose(got, np.mean(passes, axis=0), atol=1e-4)
    # the passes differ, so the average is not any one of them
    assert np.abs(passes[0] - passes[2]).max() > 1e-3
    # flip averaging makes the result mirror-symmetric (no padding at 40x72)
    flipped = Segmenter(net, flip=True)
    np.testing.assert_allclose(flipped.logits(img),
                               flipped.logits(img[:, ::-1].copy())[:, :, ::-1], atol=1e-5)


def test_hybridized_segmenter_serves_several_sizes():
    net = _net()
    images = [_image(37, 69, seed=4), _image(24, 24, seed=5)]
    imperative = [Segmenter(net, hybridize=False).logits(im) for im in images]
    plain = Segmenter(net, optimize=False)
    assert net._active  # hybridized once, here
    fused = Segmenter(net)  # the default CPU path: fused graph, float reassociation
    for _ in range(2):
        for im, want in zip(images, imperative):
            np.testing.assert_allclose(plain.logits(im), want, atol=1e-5)
            np.testing.assert_allclose(fused.logits(im), want, atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="tiles"), "mode 'tiles'"),
    (dict(mode="sliding"), "needs crop_size"),
    (dict(mode="sliding", crop_size=(30, 40)), r"multiples of 8"),
    (dict(mode="sliding", crop_size=32, stride=40), "would skip pixels"),
    (dict(mode="sliding", crop_size=32, stride=7), "multiples of the cell width 2"),
    (dict(crop_size=32), "sliding' only"),
    (dict(scales=(1.0, 0)), "positive"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(_net(), hybridize=False, **kwargs)


def test_bad_images_are_refused():
    seg = Segmenter(_net(), hybridize=False)
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(20, 30\)"):
        seg.predict(np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        seg.predict(np.zeros((20, 30, 3), np.float32))


# ------------------------------------------------------------------------ from_name, weights
def _saved(tmp_path, name="tiny", **kw):
    net = _net(**kw)
    path = str(tmp_path / (name + ".params"))
    net.save_parameters(path)
    write_sidecar(path, net.config)
    return net, path


def test_from_params_file_and_sidecar(tmp_path):
    net, path = _saved(tmp_path)
    img = _image(37, 69, seed=6)
    want = Segmenter(net).predict(img)
    seg = Segmenter.from_name(path, flip=True)
    assert seg.flip and seg.classes == K
    np.testing.assert_array_equal(Segmenter.from_name(path).predict(img), want)
    # a model name plus weights (no sidecar needed)
    os.remove(path[:-len(".params")] + ".json")
    named = Segmenter.from_name("duc_hdc_resnet18", params=path, classes=K,
                                overrides=dict(base_width=8))
    np.testing.assert_array_equal(named.predict(img), want)
    with pytest.raises(ValueError, match=r"parameter backbone\.layer1\.2\.\S+ \(shape .*\) is "
                                         r"missing from the file"):
        Segmenter.from_name("duc_hdc_resnet34", params=path, classes=K,
                            overrides=dict(base_width=8))


def test_weights_that_do_not_fit_name_the_parameter(tmp_path):
    _, path = _saved(tmp_path, "three", classes=3)
    # the sidecar claims 5 classes, the weights have 3
    write_sidecar(path, _net().config)
    with pytest.raises(ValueError, match=r"three.params does not fit the model: parameter "
                                         r"head\.\S+ has shape \(48,"):
        Segmenter.from_name(path)
    _, narrow = _saved(tmp_path, "narrow", base_width=4)
    with pytest.raises(ValueError, match=r"parameter backbone\.conv1\.0\.weight has shape "
                                         r"\(4, 3, 3, 3\) in the file, the model needs \(8, "):
        Segmenter.from_name("duc_hdc_resnet18", params=narrow, classes=K,
                            overrides=dict(base_width=8))
    release = str(tmp_path / "release.params")
    mx.nd.save(release, {"arg:conv1_1_3x3_s2_weight": mx.nd.zeros((2, 2))})
    with pytest.raises(ValueError, match="converted first"):
        Segmenter.from_name("duc_hdc_resnet18", params=release, classes=K)
    junk = str(tmp_path / "junk.params")
    with open(junk, "wb") as f:
        f.write(b"not parameters")
    with pytest.raises(ValueError, match="junk.params is not a complete MXNet parameter file"):
        Segmenter.from_name("duc_hdc_resnet18", params=junk, classes=K)
    with pytest.raises(FileNotFoundError, match="missing.params"):
        Segmenter.from_name(str(tmp_path / "missing.params"))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet_duc_nope") as info:
        Segmenter.from_name("resnet_duc_nope")
    message = str(info.value)
    assert "duc_hdc_resnet18" in message and "duc_hdc_resnet101_cityscapes_onnx" in message
    with pytest.raises(ValueError, match="ImageNet backbone"):
        Segmenter.from_name("resnet50_v1s")


def test_from_zoo_name(tmp_path, monkeypatch):
    net = get_model("duc_hdc_resnet18", classes=2, cell_width=8)  # the zoo entry's settings
    path = str(tmp_path / "tiny_zoo.params")
    net.save_parameters(path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    entry = zoo.ZooEntry(name="tiny_test", kind="params", source="url",
                         file_name="tiny_zoo.params", urls=("file://" + path,), sha256=digest,
                         model="duc_hdc_resnet18", classes=2, cell_width=8,
                         mean=(122.675, 116.669, 104.008), std=(1.0, 1.0, 1.0),
                         dataset="synthetic", metric={})
    monkeypatch.setitem(zoo.MODELS, "tiny_test", entry)
    img = _image(33, 41, seed=7)
    seg = Segmenter.from_name("tiny_test", root=str(tmp_path / "cache"))
    assert os.path.exists(str(tmp_path / "cache" / "tiny_zoo.params"))
    np.testing.assert_array_equal(seg.predict(img), Segmenter(net).predict(img))


# ------------------------------------------------------------------------ duc-hdc predict
def _write_video(path, frames):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0,
                             (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(f[:, :, ::-1])
    writer.release()


def test_cli_predict_images_folders_globs_videos(tmp_path, capsys):
    net, params = _saved(tmp_path)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    a, b = _image(37, 69, seed=8), _image(40, 72, seed=9)
    assert cv2.imwrite(str(src / "a.png"), a[:, :, ::-1])
    assert cv2.imwrite(str(src / "sub" / "b.jpg"), b[:, :, ::-1])
    with open(str(src / "a.png"), "rb") as f:
        data = f.read()
    with open(str(tmp_path / "cut.png"), "wb") as f:
        f.write(data[:len(data) // 2])  # truncated
    (tmp_path / "glob").mkdir()
    assert cv2.imwrite(str(tmp_path / "glob" / "g1.png"), a[:, :, ::-1])
    video = str(tmp_path / "clip.avi")
    _write_video(video, [_image(24, 40, seed=s) for s in range(3)])
    out = tmp_path / "out"
    rc = cli.main(["predict", "--params", params, str(src), str(tmp_path / "cut.png"),
                   str(tmp_path / "nothing.png"), str(tmp_path / "glob" / "*.png"), video,
                   "--out", str(out), "--flip"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "3 image(s), 3 frame(s) from 1 video(s)" in captured.out
    assert "2 input(s) unreadable" in captured.err
    assert "cut.png: truncated PNG" in captured.err and "nothing.png" in captured.err
    seg = Segmenter(net, flip=True)
    for stem, img in (("a", a), (os.path.join("sub", "b"), read_image(str(src / "sub" /
                                                                          "b.jpg"))),
                      ("g1", a)):
        ids = cv2.imread(str(out / (stem + "_trainIds.png")), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, seg.predict(img))
        colour = cv2.imread(str(out / (stem + "_color.png")))
        assert colour.shape == img.shape
        assert os.path.exists(str(out / (stem + "_overlay.png")))
    frames = sorted(os.listdir(str(out / "clip")))
    assert frames == ["frame_%06d_%s.png" % (i, k) for i in range(3) for k in ("color",
                                                                               "trainIds")]
    cap = cv2.VideoCapture(str(out / "clip_overlay.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3
    # nothing readable: non-zero exit
    rc = cli.main(["predict", "--params", params, str(tmp_path / "cut.png"), "--out",
                   str(out)])
    assert rc == 1
    assert "1 input(s) unreadable" in capsys.readouterr().err


def test_expand_inputs_keeps_names_apart(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        assert cv2.imwrite(str(tmp_path / d / "same.png"), _image(8, 8))
    found, missing = expand_inputs([str(tmp_path / "x" / "same.png"),
                                    str(tmp_path / "y" / "same.png"), str(tmp_path / "none*")])
    assert [stem for _, stem in found] == ["same", "same_1"]
    assert missing == [(str(tmp_path / "none*"), "no such file, folder or matching glob")]


def test_cli_predict_needs_a_model(tmp_path, capsys):
    rc = cli.main(["predict", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no model given: pass --model NAME_OR_ARTIFACT" in capsys.readouterr().err


# ------------------------------------------------------------------------ duc-hdc download
def test_cli_download(tmp_path, monkeypatch, capsys):
    payload = b"weights" * 100
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "w.params").write_bytes(payload)
    entry = zoo.ZooEntry(name="tiny_download", kind="params", source="url", file_name="w.params",
                         urls=("https://example.invalid/w.params",),
                         sha256=hashlib.sha256(payload).hexdigest(), model="duc_hdc_resnet18",
                         classes=2, cell_width=8, mean=(0, 0, 0), std=(1, 1, 1),
                         dataset="synthetic", metric={}, description="test entry")
    monkeypatch.setitem(zoo.MODELS, "tiny_download", entry)
    rc = cli.main(["download", "tiny_download", "--root", str(tmp_path / "cache"),
                   "--base-url", "file://" + str(mirror)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "tiny_download: test entry" in out
    assert out.strip().splitlines()[-1] == str(tmp_path / "cache" / "w.params")
    assert (tmp_path / "cache" / "w.params").read_bytes() == payload
    assert cli.main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "duc_hdc_resnet101_cityscapes_onnx" in listing and "tiny_download" in listing
    assert cli.main(["download"]) == 0 and "resnet101_v1s" in capsys.readouterr().out
    rc = cli.main(["download", "no_such_weights", "--root", str(tmp_path / "cache")])
    assert rc == 2
    assert "known names:" in capsys.readouterr().err
    rc = cli.main(["download", "duc_hdc_resnet101_cityscapes_tusimple", "--root",
                   str(tmp_path / "cache")])
    assert rc == 2
    assert "duc-hdc convert tusimple" in capsys.readouterr().err
