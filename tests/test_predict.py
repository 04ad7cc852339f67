"""Segmenter: the release's whole-image protocol, sliding windows, multi-scale + flip; predict
over files (names, videos, formats)."""
import hashlib
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from duc_hdc import cli, get_model
from duc_hdc.hub import zoo
from duc_hdc.models.sidecar import write_sidecar
from duc_hdc.inference.io import OUTPUTS_LIST, expand_inputs, output_stems, read_image
from duc_hdc.inference.predict import predict_paths, prediction_report, run_prediction
from duc_hdc.inference.segmenter import Segmenter, sliding_windows, window_starts

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
    # crop 24x40, stride 16 on 37x69 (cell width 2): padded only to whole cells, 38x70; rows
    # start at 0 and 38 - 24 = 14 (the last window ends at the border), columns at 0, 16 and
    # 70 - 40 = 30; logits are averaged where windows overlap
    x = np.zeros((3, 38, 70), np.float32)
    x[:, :37, :69] = _normalized(net, img)
    total = np.zeros((K, 19, 35), np.float32)
    count = np.zeros((19, 35), np.float32)
    for y in (0, 14):
        for x0 in (0, 16, 30):
            total[:, y // 2:y // 2 + 12, x0 // 2:x0 // 2 + 20] += _raw(net, x[:, y:y + 24,
                                                                               x0:x0 + 40])
            count[y // 2:y // 2 + 12, x0 // 2:x0 // 2 + 20] += 1
    assert count.min() == 1 and count.max() == 6  # overlaps really happen
    want = _up(_softmax(total / count), 37, 69)
    got = Segmenter(net, mode="sliding", crop_size=(24, 40), stride=16).logits(img)
    np.testing.assert_allclose(got, want, atol=1e-5)
    batched = Segmenter(net, mode="sliding", crop_size=(24, 40), stride=16, batch_size=4)
    np.testing.assert_allclose(batched.logits(img), want, atol=1e-5)


@pytest.mark.parametrize("size, crop", [
    ((40, 72), (40, 72)),   # one window exactly the image
    ((37, 69), (40, 72)),   # the image padded to multiples of 8, as in whole mode
    ((10, 30), (24, 40)),   # an image smaller than the window: padded to 16x32, not to 24x40
])
def test_sliding_with_a_window_covering_the_image_is_the_whole_image_protocol(size, crop):
    net = _net()
    img = _image(*size, seed=11)
    whole = Segmenter(net, optimize=False).logits(img)
    sliding = Segmenter(net, optimize=False, mode="sliding", crop_size=crop).logits(img)
    np.testing.assert_allclose(sliding, whole, atol=1e-6)


def test_sliding_windows_of_the_readme_example_stay_inside_the_image():
    # duc-hdc evaluate --mode sliding --crop-size 800,800 --stride 600 on 1024x2048 Cityscapes
    assert window_starts(1024, 800, 600) == [0, 224]
    assert window_starts(2048, 800, 600) == [0, 600, 1200, 1248]
    tiles = sliding_windows(1024, 2048, (800, 800), (600, 600), cell_width=2)
    assert tiles.padded == (1024, 2048) and tiles.window == (800, 800)
    assert (tiles.ys, tiles.xs) == ([0, 224], [0, 600, 1200, 1248])
    # no window sees padding: each ends inside the image, the last ones at its border
    assert max(tiles.ys) + 800 == 1024 and max(tiles.xs) + 800 == 2048
    assert window_starts(800, 800, 600) == [0] and window_starts(500, 800, 600) == [0]
    assert window_starts(1400, 800, 600) == [0, 600]  # stride fits exactly: no extra window


def test_sliding_windows_lie_inside_and_cover_every_pixel():
    rng = np.random.RandomState(0)
    for _ in range(300):
        cw = int(rng.choice([1, 2, 4, 8]))
        crop = tuple(int(v) for v in rng.randint(1, 13, 2) * 8)
        stride = tuple(int(rng.randint(1, c // cw + 1)) * cw for c in crop)
        h, w = (int(v) for v in rng.randint(1, 200, 2))
        tiles = sliding_windows(h, w, crop, stride, cell_width=cw)
        for length, padded, window, starts, c, s in zip((h, w), tiles.padded, tiles.window,
                                                        (tiles.ys, tiles.xs), crop, stride):
            case = (h, w, crop, stride, cw)
            if length <= c:  # padded as in whole mode: the next multiple of 8
                assert padded == window == -(-length // 8) * 8 <= c, case
                assert starts == [0], case
            else:  # padded to whole logit cells only
                assert window == c and length <= padded < length + cw, case
            assert padded % cw == 0 and all(v % cw == 0 for v in starts), case
            assert starts == sorted(set(starts)) and starts[0] == 0, case
            assert all(0 <= v and v + window <= padded for v in starts), case  # inside
            assert starts[-1] + window == padded, case  # the last window ends at the border
            assert all(b - a <= s for a, b in zip(starts, starts[1:])), case  # stride kept
            covered = np.zeros(padded, bool)
            for v in starts:
                covered[v:v + window] = True
            assert covered.all(), case  # every pixel (and padding cell) in some window


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
    """An MJPG AVI written by OpenCV's own writer (no FFmpeg: the same bytes everywhere)."""
    writer = cv2.VideoWriter(path, cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 5.0,
                             (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(f[:, :, ::-1])
    writer.release()


def _png(path, rgb):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def _files_under(folder):
    """The files under ``folder`` but predict's list of its outputs (OUTPUTS_LIST)."""
    return sorted(os.path.join(d, n) for d, _, names in os.walk(str(folder)) for n in names
                  if n != OUTPUTS_LIST)


def test_predict_images_folders_globs_videos(tmp_path):
    net, params = _saved(tmp_path)
    src = tmp_path / "in"
    a, b = _image(37, 69, seed=8), _image(40, 72, seed=9)
    _png(src / "a.png", a)
    _png(src / "sub" / "b.jpg", b)
    data = (src / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])  # truncated
    _png(tmp_path / "glob" / "g1.png", a)
    video = str(tmp_path / "clip.avi")
    _write_video(video, [_image(24, 40, seed=s) for s in range(3)])
    out = tmp_path / "out"
    result = run_prediction([str(src), str(tmp_path / "cut.png"), str(tmp_path / "nothing.png"),
                             str(tmp_path / "glob" / "*.png"), video], str(out), model=params,
                            flip=True, progress=False)
    assert (result["images"], result["frames"], result["videos"]) == (3, 3, 1)
    skipped = dict(result["skipped"])
    assert skipped[str(tmp_path / "cut.png")].startswith("truncated PNG")
    assert skipped[str(tmp_path / "nothing.png")] == "no such file, folder or matching glob"
    # outputs mirror the paths below the deepest common folder (tmp_path)
    seg = Segmenter(net, flip=True)
    for stem, img in (("in/a", a), ("in/sub/b", read_image(str(src / "sub" / "b.jpg"))),
                      ("glob/g1", a)):
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
    assert sorted(result["files"]) == _files_under(out)  # every file reported exists, no other
    lines, problems, status = prediction_report(result, str(out))
    assert lines == ["3 image(s), 3 frame(s) from 1 video(s) written to %s (16 files)" % out]
    assert problems[0] == "2 input(s) skipped:" and status == 3
    # nothing readable: nothing written, exit status 1
    result = run_prediction([str(tmp_path / "cut.png")], str(tmp_path / "o2"), model=params,
                            progress=False)
    lines, problems, status = prediction_report(result, str(tmp_path / "o2"))
    assert status == 1 and problems[0] == "1 input(s) skipped:"


def test_predict_never_overwrites_colliding_names(tmp_path):
    net = _net()
    seg = Segmenter(net)
    images = {}
    for k, rel in enumerate(["a/good.png", "b/good.png", "good_1.png", "x/same.png",
                             "y/same.png", "c/pic.png", "c/pic.jpg", "c/pic_png.png"]):
        images[rel] = _image(16, 24, seed=20 + k)
        _png(tmp_path / "in" / rel, images[rel])
    src = lambda rel: str(tmp_path / "in" / rel)  # noqa: E731
    inputs = [src("a/good.png"), src("b/good.png"), src("good_1.png"),
              str(tmp_path / "in" / "x"), str(tmp_path / "in" / "y"), src("c/pic.png"),
              src("c/pic.jpg"), src("c/pic_png.png"), src("a/good.png")]  # the last: twice
    found, missing = expand_inputs(inputs)
    assert missing == []
    stems = dict((os.path.relpath(p, str(tmp_path / "in")), s) for p, s in found)
    assert stems == {"a/good.png": "a/good", "b/good.png": "b/good", "good_1.png": "good_1",
                     "x/same.png": "x/same", "y/same.png": "y/same", "c/pic.png": "c/pic_png",
                     "c/pic.jpg": "c/pic_jpg", "c/pic_png.png": "c/pic_png_1"}
    out = tmp_path / "out"
    result = predict_paths(seg, inputs, str(out), progress=False)
    assert result["images"] == 8 and result["skipped"] == []
    written = _files_under(out)
    assert sorted(result["files"]) == written and len(written) == 3 * 8
    for rel, stem in stems.items():  # each output holds the prediction of its own input
        ids = cv2.imread(str(out / (stem + "_trainIds.png")), cv2.IMREAD_UNCHANGED)
        img = images[rel] if rel.endswith(".png") else read_image(src(rel))
        np.testing.assert_array_equal(ids, seg.predict(img))
    assert output_stems(["a/good.png", "b/good.png", "good_1.png"]) == ["a/good", "b/good",
                                                                        "good_1"]
    assert output_stems([src("a/good.png")]) == ["good"]
    # a folder given alone keeps the paths below it, even when all files sit deeper
    _png(tmp_path / "deep" / "sub" / "z.png", _image(8, 8))
    assert [s for _, s in expand_inputs([str(tmp_path / "deep")])[0]] == ["sub/z"]
    assert [s for _, s in expand_inputs([str(tmp_path / "deep" / "sub" / "z.png")])[0]] == ["z"]
    # a video's frames cannot be overwritten by an image named like them
    (tmp_path / "v").mkdir()
    _write_video(str(tmp_path / "v" / "clip.avi"), [_image(16, 24, seed=s) for s in range(2)])
    _png(tmp_path / "v" / "clip" / "frame_000000.png", _image(16, 24, seed=40))
    result = predict_paths(seg, [str(tmp_path / "v")], str(tmp_path / "out2"), progress=False)
    assert result["images"] == 1 and result["frames"] == 0 and result["videos"] == 0
    assert "already written by an earlier input" in dict(result["skipped"])[
        str(tmp_path / "v" / "clip.avi")]
    assert sorted(result["files"]) == _files_under(tmp_path / "out2")


def test_cli_predict_needs_a_model(tmp_path, capsys):
    rc = cli.main(["predict", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no model given: pass --model NAME_OR_ARTIFACT" in capsys.readouterr().err


def test_truncated_video_reports_frames_read_of_expected(tmp_path):
    seg = Segmenter(_net())
    full = str(tmp_path / "full.avi")
    _write_video(full, [_image(24, 40, seed=s) for s in range(3)])
    cut = str(tmp_path / "cut.avi")
    data = open(full, "rb").read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])  # OpenCV still opens it and announces 3 frames
    result = predict_paths(seg, [full, cut], str(tmp_path / "out"), progress=False)
    reports = {os.path.basename(r["path"]): r for r in result["video_reports"]}
    assert (reports["full.avi"]["frames"], reports["full.avi"]["expected"]) == (3, 3)
    assert reports["full.avi"]["complete"] and reports["full.avi"]["reason"] is None
    assert (reports["cut.avi"]["frames"], reports["cut.avi"]["expected"]) == (1, 3)
    assert not reports["cut.avi"]["complete"]
    assert result["incomplete"] == [(cut, "1 of 3 frames read (truncated or damaged file?)")]
    assert (result["frames"], result["videos"]) == (4, 2)
    lines, problems, status = prediction_report(result, str(tmp_path / "out"))
    assert "4 of 6 frame(s) from 2 video(s)" in lines[0]
    assert problems == ["1 video(s) incomplete:",
                        "  %s: 1 of 3 frames read (truncated or damaged file?)" % cut]
    assert status == 3  # not a silent success
    assert sorted(result["files"]) == _files_under(tmp_path / "out")
    # the overlay video of the cut one holds the frame read
    cap = cv2.VideoCapture(str(tmp_path / "out" / "cut_overlay.avi"))
    assert cap.read()[0] and not cap.read()[0]
    # a complete run reports success
    result = predict_paths(seg, [full], str(tmp_path / "out3"), progress=False)
    assert prediction_report(result, str(tmp_path / "out3"))[1:] == ([], 0)


def test_unsupported_formats_are_named_as_such(tmp_path):
    seg = Segmenter(_net())
    names = ["clip.flv", "anim.gif", "notes.txt", "noext"]
    for name in names:
        (tmp_path / name).write_bytes(b"GIF89a" if name.endswith("gif") else b"data")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    result = predict_paths(seg, [str(tmp_path / n) for n in names] + [str(tmp_path / "docs")],
                           str(tmp_path / "out"), progress=False)
    reasons = dict(result["skipped"])
    for name, ext in zip(names, [".flv", ".gif", ".txt", "(no extension)"]):
        reason = reasons[str(tmp_path / name)]
        assert reason.startswith("unsupported format %s; supported: images .png .jpg" % ext)
        assert "videos .mp4 .avi" in reason and "corrupt" not in reason
    assert reasons[str(tmp_path / "docs")].startswith("folder holds no images or videos")
    assert result["images"] == 0 and result["files"] == []
    # a glob names them too; read_image refuses them by name
    found, skipped = expand_inputs([str(tmp_path / "*.flv")])
    assert found == [] and skipped[0][1].startswith("unsupported format .flv")
    with pytest.raises(ValueError, match=r"clip.flv: unsupported format \.flv"):
        read_image(str(tmp_path / "clip.flv"))


def test_predict_needs_a_model(tmp_path):
    with pytest.raises(ValueError, match="no model given: pass --model NAME_OR_ARTIFACT"):
        run_prediction([str(tmp_path)], str(tmp_path / "o"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file; predict writes into a folder"):
        predict_paths(Segmenter(_net(), hybridize=False), [], str(tmp_path / "file"))


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
