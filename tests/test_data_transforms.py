"""Joint transforms: alignment, padding, DUC label sampling, normalization, determinism."""
import numpy as np
import pytest

from duc_hdc.data import transforms as T

MEAN = np.array(T.RELEASE_MEAN, np.float32)


def _pattern(h=64, w=128, block=8, seed=0):
    """A label of 8x8 blocks (19 classes) and an image painting each class its own colour."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 19, (h // block, w // block)).astype(np.uint8)
    label = np.kron(grid, np.ones((block, block), np.uint8))
    lut = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    return lut[label], label, lut


def _denorm(data, mean=MEAN, std=None):
    img = data.transpose(1, 2, 0)
    if std is not None:
        img = img * std
    return img + mean


@pytest.mark.parametrize("seed", range(12))
def test_image_and_label_stay_aligned(seed):
    img, label, lut = _pattern(seed=seed)
    t = T.TrainTransform(crop_size=(48, 80), scales=(0.75, 1.0, 1.5, 2.0), cell_width=1,
                         anchor_jitter=20, mirror=True)
    data, lab = t(img, label, [[32, 40], [32, 90]], np.random.default_rng(seed))
    assert data.shape == (3, 48, 80) and data.dtype == np.float32
    assert lab.shape == (48, 80)
    lab = lab.astype(np.int64)
    # pixels whose 3x3 label neighbourhood is one class are free of bilinear blending
    pad = np.pad(lab, 1, constant_values=-1)  # crop-edge pixels blend with the outside
    same = np.ones_like(lab, bool)
    for dy in range(3):
        for dx in range(3):
            same &= pad[dy: dy + 48, dx: dx + 80] == lab
    inside = same & (lab != 255)
    assert inside.sum() > 500
    colours = _denorm(data)[inside]
    np.testing.assert_allclose(colours, lut[lab[inside]], atol=1.0)


def test_planted_square_found_in_both_after_scale_crop_flip():
    img = np.full((64, 128, 3), 90, np.uint8)
    label = np.zeros((64, 128), np.uint8)
    img[10:20, 100:110] = (250, 0, 0)  # a red square, class 7, near the right edge
    label[10:20, 100:110] = 7
    t = T.TrainTransform(crop_size=(96, 256), scales=(1.5,), cell_width=2, anchor_jitter=0,
                         mirror=True)
    flips = set()
    for seed in range(8):
        data, lab = t(img, label, [[32, 64]], np.random.default_rng(seed))
        red = _denorm(data)[..., 0] > 200
        ys, xs = np.nonzero(red)
        ly, lx = np.nonzero(lab == 7)
        assert len(ys) > 150 and len(ly) > 30
        # centroids agree (label grid step 2: pixel 2*i of the crop)
        assert abs(ys.mean() - 2 * ly.mean()) < 1.5 and abs(xs.mean() - 2 * lx.mean()) < 1.5
        # scale 1.5 around anchor (48, 96) -> crop top-left (0, -32): no jitter -> exact spot
        flipped = xs.mean() < 128
        flips.add(flipped)
        expected_x = (105 * 1.5 + 32) if not flipped else 255 - (105 * 1.5 + 32)
        assert abs(xs.mean() - expected_x) < 1.5 and abs(ys.mean() - 15 * 1.5) < 1.5
    assert flips == {True, False}  # both mirror states were exercised


def test_padding_with_mean_and_ignore():
    img, label, _ = _pattern()
    for std in (None, T.IMAGENET_STD):
        t = T.TrainTransform(crop_size=(96, 160), scales=(1.0,), mean=MEAN, std=std,
                             cell_width=2, anchor_jitter=None, mirror=False)
        data, lab = t(img, label, None, np.random.default_rng(0))
        # random position of a crop larger than the image: image at the top-left, pad after
        assert np.all(data[:, 64:, :] == 0.0) and np.all(data[:, :, 128:] == 0.0)
        assert np.all(lab[32:, :] == 255) and np.all(lab[:, 64:] == 255)
        assert not np.any(lab[:32, :64] == 255)
        raw = _denorm(data, MEAN, None if std is None else np.array(std, np.float32))
        np.testing.assert_allclose(raw[70, 150], MEAN, atol=1e-3)  # padded with the mean
        np.testing.assert_allclose(raw[:64, :128], img, atol=1e-3)
    # a crop leaving the image on the top / left (anchor near the corner)
    t = T.TrainTransform(crop_size=(32, 32), scales=(1.0,), cell_width=1, anchor_jitter=0,
                         mirror=False)
    data, lab = t(img, label, [[4, 6]], np.random.default_rng(0))
    assert np.all(data[:, :12] == 0) and np.all(data[:, :, :10] == 0)
    assert np.all(lab[:12] == 255) and np.all(lab[:, :10] == 255)
    np.testing.assert_array_equal(lab[12:, 10:], label[:20, :22])


@pytest.mark.parametrize("cell_width", [1, 2, 4, 8])
def test_duc_label_downsampling(cell_width):
    img, label, _ = _pattern(block=1)  # every pixel its own random class
    t = T.TrainTransform(crop_size=(64, 128), scales=(1.0,), cell_width=cell_width,
                         anchor_jitter=None, mirror=False)
    data, lab = t(img, label, None, np.random.default_rng(0))
    assert lab.shape == (64 // cell_width, 128 // cell_width)
    # the release: cv2.resize(label, (w / cw, h / cw), INTER_NEAREST) = every cw-th pixel
    np.testing.assert_array_equal(lab, label[::cell_width, ::cell_width])
    np.testing.assert_allclose(_denorm(data), img, atol=1e-3)  # scale 1: the image as it is


def test_mirrored_label_sampling_matches_mirrored_image():
    img, label, _ = _pattern(block=1)
    t = T.TrainTransform(crop_size=(64, 128), scales=(1.0,), cell_width=2,
                         anchor_jitter=None, mirror=True)
    for seed in range(6):
        data, lab = t(img, label, None, np.random.default_rng(seed))
        if np.allclose(_denorm(data), img[:, ::-1], atol=1e-3):
            np.testing.assert_array_equal(lab, label[:, ::-1][::2, ::2])
            return
    pytest.fail("no mirrored sample in 6 draws")


def test_anchor_crop_is_centred_on_the_anchor():
    h, w = 64, 128
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, np.zeros_like(xx)], -1).astype(np.uint8)  # pixel = its position
    label = np.zeros((h, w), np.uint8)
    t = T.TrainTransform(crop_size=(16, 24), scales=(1.0,), cell_width=1, anchor_jitter=3,
                         mirror=False)
    for seed in range(10):
        data, _ = t(img, label, [[30, 70]], np.random.default_rng(seed))
        raw = _denorm(data)
        top, left = raw[0, 0, 0], raw[0, 0, 1]
        assert 30 - 8 - 3 <= top <= 30 - 8 + 3 and 70 - 12 - 3 <= left <= 70 - 12 + 3
    # anchors are given in original pixels and follow the scale
    t = T.TrainTransform(crop_size=(16, 24), scales=(0.5,), cell_width=1, anchor_jitter=0,
                         mirror=False)
    data, _ = t(img, label, [[30, 70]], np.random.default_rng(0))
    centre = _denorm(data)[8, 12]  # crop centre = anchor (15, 35) in the half-size image
    assert abs(centre[0] - 30.5) <= 1.0 and abs(centre[1] - 70.5) <= 1.0


def test_determinism_by_seed():
    img, label, _ = _pattern()
    t = T.TrainTransform(crop_size=(32, 64), scales=T.RELEASE_SCALES, cell_width=2,
                         anchor_jitter=16)
    anchors = [[32, 16 * i] for i in range(1, 8)]
    a = t(img, label, anchors, np.random.default_rng([5, 1, 3]))
    b = t(img, label, anchors, np.random.default_rng([5, 1, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    outs = [t(img, label, anchors, np.random.default_rng([5, 1, k]))[0] for k in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_normalize_pad_eval():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = T.normalize(img, T.RELEASE_MEAN)
    assert out.shape == (3, 5, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 2, 3], img[2, 3] - MEAN, rtol=1e-6)
    # the 0..255 ImageNet statistics equal GluonCV's (img / 255 - mean) / std on 0..1 values
    b = T.normalize(img, T.IMAGENET_MEAN, T.IMAGENET_STD)
    c = (img / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(b, c.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    # one scale, no guessing: mean 0 and std 1 leave the 0..255 values as they are (the old
    # heuristic took all-<=1 statistics for the 0..1 scale and divided by 255)
    ident = T.normalize(img, (0, 0, 0), (1, 1, 1))
    np.testing.assert_array_equal(ident, img.transpose(2, 0, 1).astype(np.float32))
    padded, size = T.pad_to_multiple(out, 8)
    assert padded.shape == (3, 8, 8) and size == (5, 6)
    np.testing.assert_array_equal(padded[:, :5, :6], out)
    assert np.all(padded[:, 5:, :] == 0) and np.all(padded[:, :, 6:] == 0)
    same, size = T.pad_to_multiple(np.zeros((3, 16, 24), np.float32), 8)
    assert same.shape == (3, 16, 24) and size == (16, 24)
    data, lab, size = T.EvalTransform()(img, "label")
    assert data.shape == (3, 8, 8) and lab == "label" and size == (5, 6)
    np.testing.assert_allclose(data[:, :5, :6], out)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of cell_width"):
        T.TrainTransform(crop_size=(30, 64), cell_width=4)
    with pytest.raises(ValueError, match="scales"):
        T.TrainTransform(scales=())
    with pytest.raises(ValueError, match="3 values"):
        T.normalize(np.zeros((2, 2, 3), np.uint8), (1, 2))
    t = T.TrainTransform(crop_size=(8, 8), cell_width=2)
    with pytest.raises(ValueError, match="64x128 but its label is 32x64"):
        t(np.zeros((64, 128, 3), np.uint8), np.zeros((32, 64), np.uint8), None,
          np.random.default_rng(0))


def _release_label(label, scale, top, left, flip, crop, step, ignore=255):
    """The release's label path, directly in cv2: resize the whole label (nearest), crop with
    ignore padding, mirror, then nearest-resize to the DUC grid."""
    import cv2

    h, w = label.shape
    sh, sw = int(round(h * scale)), int(round(w * scale))
    big = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST)
    ch, cw = crop
    pad = max(ch, cw) + abs(top) + abs(left)
    padded = np.pad(big, pad, constant_values=ignore)
    out = padded[pad + top: pad + top + ch, pad + left: pad + left + cw]
    if flip:
        out = out[:, ::-1]
    return cv2.resize(np.ascontiguousarray(out), (cw // step, ch // step),
                      interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("scale", [0.5, 1.5])
@pytest.mark.parametrize("step", [1, 2, 4])
def test_label_at_other_scales_is_sampled_as_cv2_resize_nearest(scale, step):
    _, label, _ = _pattern(h=64, w=128, block=1)  # every pixel its own random class
    img = np.zeros((64, 128, 3), np.uint8)
    t = T.TrainTransform(crop_size=(48, 96), scales=(scale,), cell_width=step,
                         anchor_jitter=16, mirror=True)
    anchors = [[20, 30], [40, 100]]
    flips = set()
    for seed in range(10):
        sy, sx, top, left, flip, _ = t.sample_params(64, 128, anchors,
                                                     np.random.default_rng(seed))
        flips.add(flip)
        _, lab = t(img, label, anchors, np.random.default_rng(seed))
        expected = _release_label(label, scale, top, left, flip, (48, 96), step)
        np.testing.assert_array_equal(lab.astype(np.uint8), expected,
                                      err_msg="seed %d scale %s" % (seed, scale))
    assert flips == {True, False}


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_anchor_jitter_scales_with_the_random_scale(scale):
    import cv2

    h, w, jitter = 64, 128, 20
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy * 3, xx * 2, np.zeros_like(xx)], -1).astype(np.uint8)
    t = T.TrainTransform(crop_size=(16, 24), scales=(scale,), cell_width=1,
                         anchor_jitter=jitter, mirror=False)
    anchor = (30, 70)
    bound = int(jitter * scale)  # the release's random_bound at this scale
    dy, dx = [], []
    for seed in range(600):
        _, _, top, left, _, (sh, sw) = t.sample_params(h, w, [anchor],
                                                       np.random.default_rng(seed))
        dy.append(top + 8 - anchor[0] * scale)
        dx.append(left + 12 - anchor[1] * scale)
    assert max(dy) == max(dx) == bound and min(dy) == min(dx) == -bound
    # the crop at that position is the cv2-resized image's window there
    rng_seed = 3
    _, _, top, left, _, (sh, sw) = t.sample_params(h, w, [anchor],
                                                   np.random.default_rng(rng_seed))
    data, _ = t(img, None, [anchor], np.random.default_rng(rng_seed))
    big = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    window = big[max(top, 0): top + 16, max(left, 0): left + 24]
    got = _denorm(data)[max(-top, 0):, max(-left, 0):][:window.shape[0], :window.shape[1]]
    np.testing.assert_allclose(got, window, atol=2.0)
