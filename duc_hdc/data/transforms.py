"""Joint (image, label) transforms for training and evaluation.

Training follows the original release (TuSimple-DUC): a random scale from a list, a crop of
fixed size centred on one of the image's "bigger patch" anchors moved by a random jitter (or a
random crop position), padding with the mean (image) and the ignore label (label) where the crop
leaves the image, a horizontal mirror, mean subtraction, and the label taken at every
``cell_width``-th pixel for the DUC output (Section 3.1).

Scale, crop and mirror of the image are one affine map applied with ``cv2.warpAffine`` to the
crop window only (bilinear), so a 800x800 crop of a 2048x1024 image never resizes the whole
image. The map is the one ``cv2.resize`` uses (pixel centres aligned: ``src = (dst + 0.5) /
scale - 0.5``), so the result equals resize-then-crop-then-flip. The label is read at the
source pixels ``cv2.resize(..., INTER_NEAREST)`` reads (``floor(dst / scale)``), as the release
resizes its labels, for the crop's pixels only.
"""
import cv2
import numpy as np

from ..normalization import IMAGENET_MEAN, IMAGENET_STD, RELEASE_MEAN

__all__ = [
    "RELEASE_MEAN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RELEASE_SCALES",
    "normalize",
    "pad_to_multiple",
    "TrainTransform",
    "EvalTransform",
]

#: The release's training scales.
RELEASE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


def _stats(mean, std):
    """mean/std as float32 (3,) arrays, taken as given: on the 0..255 scale
    (:mod:`duc_hdc.normalization`); std None = no scaling."""
    mean = np.asarray(mean, np.float32).reshape(-1)
    if mean.size != 3:
        raise ValueError("mean must have 3 values (R, G, B), got %r" % (mean.tolist(),))
    if std is None:
        return mean, None
    std = np.asarray(std, np.float32).reshape(-1)
    if std.size != 3 or np.any(std <= 0):
        raise ValueError("std must have 3 positive values (R, G, B), got %r" % (std.tolist(),))
    return mean, std


def normalize(img, mean=RELEASE_MEAN, std=None):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``(img - mean) / std``.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W, 3) RGB image, uint8 (or float on the 0..255 scale).
    mean : sequence of 3 float
        RGB mean on the 0..255 scale (the only scale: nothing is rescaled).
    std : sequence of 3 float or None
        RGB std; None = no scaling (the release).

    Returns
    -------
    numpy.ndarray
        (3, H, W) float32.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("normalize expects an (H, W, 3) RGB image, got shape %s" % (img.shape,))
    mean, std = _stats(mean, std)
    return _normalize_chw(img, mean, std)


def _normalize_chw(img, mean, std):
    # channel by channel straight into CHW: 5x faster than astype + subtract + transpose copy
    out = np.empty((3,) + img.shape[:2], np.float32)
    for k in range(3):
        np.subtract(img[..., k], mean[k], out=out[k], dtype=np.float32)
        if std is not None:
            np.divide(out[k], std[k], out=out[k])
    return out


def pad_to_multiple(chw, multiple=8, value=0.0):
    """Pad a (C, H, W) array at the bottom and right to multiples of ``multiple``.

    Padding a normalized image with 0 equals padding the raw image with the mean.

    Returns
    -------
    padded : numpy.ndarray
        (C, H', W') with H', W' the next multiples of ``multiple``.
    size : (int, int)
        The original (H, W), to crop predictions back.
    """
    chw = np.asarray(chw)
    h, w = chw.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return chw, (h, w)
    pad = [(0, 0)] * (chw.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(chw, pad, mode="constant", constant_values=value), (h, w)


def _affine(scale_y, scale_x, top, left, flip, out_w, step=1):
    """dst -> src matrix of resize(scale) then crop at (top, left) then optional mirror.

    ``step`` samples every step-th output pixel (the DUC label grid).
    """
    # resize: src = (u + 0.5) / s - 0.5 with u = crop coordinate + offset
    if flip:
        # u = left + (out_w - 1 - step * x)
        ax, bx = -step / scale_x, (left + out_w - 1 + 0.5) / scale_x - 0.5
    else:
        ax, bx = step / scale_x, (left + 0.5) / scale_x - 0.5
    ay, by = step / scale_y, (top + 0.5) / scale_y - 0.5
    return np.array([[ax, 0.0, bx], [0.0, ay, by]], np.float64)


def _nearest_source(dst, src_size, dst_size):
    """Source indices ``cv2.resize(..., INTER_NEAREST)`` reads for destination indices ``dst``
    when resizing ``src_size`` to ``dst_size`` pixels: floor(dst * src / dst), clamped."""
    inv_scale = float(dst_size) / float(src_size)
    return np.minimum(np.floor(dst * (1.0 / inv_scale)).astype(np.int64), src_size - 1)


class TrainTransform(object):
    """The release's training augmentation.

    Parameters
    ----------
    crop_size : (int, int)
        (height, width) of the crop; multiples of ``cell_width``.
    scales : sequence of float
        Random scale factors (release: 0.5, 0.75, 1.0, 1.25, 1.5).
    mean, std : sequence of 3 float, or None for std
        Normalization (see :func:`normalize`).
    cell_width : int
        DUC cell width: the label is returned at 1 / cell_width resolution (every
        cell_width-th pixel, the release's nearest downsampling).
    anchor_jitter : int or None
        Crop centred on a random anchor moved by up to ``int(anchor_jitter * scale)`` pixels
        along each axis of the scaled image (release: 120 at scale 1, its ``random_bound``). None, or an image without anchors, gives a
        uniformly random crop position.
    mirror : bool
        Flip horizontally with probability 0.5.
    ignore_label : int
        Label of padded pixels.

    Call ``t(img, label, anchors, rng)`` with img (H, W, 3) uint8 RGB, label (H, W) uint8 or
    None, anchors a sequence of (row, col) in image pixels or None, rng a
    ``numpy.random.Generator``. Returns (image (3, h, w) float32, label (h / cw, w / cw)
    float32, or None when label is None).
    """

    def __init__(self, crop_size=(800, 800), scales=RELEASE_SCALES, mean=RELEASE_MEAN, std=None,
                 cell_width=2, anchor_jitter=120, mirror=True, ignore_label=255):
        crop_size = tuple(int(v) for v in crop_size)
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError("crop_size must be (height, width), got %r" % (crop_size,))
        if cell_width < 1 or crop_size[0] % cell_width or crop_size[1] % cell_width:
            raise ValueError("crop_size %r must be a multiple of cell_width %r"
                             % (crop_size, cell_width))
        scales = tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0:
            raise ValueError("scales must be positive numbers, got %r" % (scales,))
        self.crop_size = crop_size
        self.scales = scales
        self.mean, self.std = _stats(mean, std)
        self.cell_width = int(cell_width)
        self.anchor_jitter = None if anchor_jitter is None else int(anchor_jitter)
        self.mirror = bool(mirror)
        self.ignore_label = int(ignore_label)

    def __repr__(self):
        return ("TrainTransform(crop_size=%r, scales=%r, cell_width=%d, anchor_jitter=%r, "
                "mirror=%r)" % (self.crop_size, self.scales, self.cell_width,
                                self.anchor_jitter, self.mirror))

    def sample_params(self, height, width, anchors, rng):
        """Draw (scale_y, scale_x, top, left, flip) for an image of the given size."""
        scale = self.scales[rng.integers(len(self.scales))]
        sh, sw = int(round(height * scale)), int(round(width * scale))
        ch, cw = self.crop_size
        anchors = None if anchors is None else np.asarray(anchors, np.float64).reshape(-1, 2)
        if self.anchor_jitter is not None and anchors is not None and len(anchors):
            row, col = anchors[rng.integers(len(anchors))]
            # the release's random_bound: the jitter is given at scale 1 and scales with it
            j = int(self.anchor_jitter * scale)
            row = row * sh / height + rng.integers(-j, j + 1)
            col = col * sw / width + rng.integers(-j, j + 1)
            top, left = int(round(row - ch / 2.0)), int(round(col - cw / 2.0))
        else:
            top = int(rng.integers(0, max(sh - ch, 0) + 1))
            left = int(rng.integers(0, max(sw - cw, 0) + 1))
        flip = bool(self.mirror and rng.random() < 0.5)
        return sh / float(height), sw / float(width), top, left, flip, (sh, sw)

    def __call__(self, img, label, anchors, rng):
        img = np.asarray(img)
        h, w = img.shape[:2]
        if label is not None and np.shape(label)[:2] != (h, w):
            raise ValueError("image is %dx%d but its label is %dx%d"
                             % (h, w, np.shape(label)[0], np.shape(label)[1]))
        scale_y, scale_x, top, left, flip, (sh, sw) = self.sample_params(h, w, anchors, rng)
        ch, cw = self.crop_size
        m = _affine(scale_y, scale_x, top, left, flip, cw)
        # replicate at the border like cv2.resize; the true outside is overwritten below
        crop = cv2.warpAffine(img, m, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        inside_y, inside_x = self._inside(top, left, sh, sw, flip, 1)
        data = _normalize_chw(crop, self.mean, self.std)
        data[:, ~inside_y] = 0.0  # the mean, after normalization
        data[:, :, ~inside_x] = 0.0
        if label is None:
            return data, None
        # the release resizes the whole label with cv2.resize(..., INTER_NEAREST), then crops
        # and takes every cell_width-th pixel; the same source pixels, read for the crop only
        step = self.cell_width
        inside_y, inside_x = self._inside(top, left, sh, sw, flip, step)
        rows = top + np.arange(0, ch, step)
        cols = np.arange(0, cw, step)
        cols = left + (cw - 1 - cols if flip else cols)
        src_y = _nearest_source(np.clip(rows, 0, sh - 1), h, sh)
        src_x = _nearest_source(np.clip(cols, 0, sw - 1), w, sw)
        lab = np.asarray(label, np.uint8)[src_y[:, None], src_x[None, :]]
        lab[~inside_y] = self.ignore_label
        lab[:, ~inside_x] = self.ignore_label
        return data, lab.astype(np.float32)

    def _inside(self, top, left, sh, sw, flip, step):
        """Rows / columns of the (step-sampled) crop that fall inside the scaled image."""
        ch, cw = self.crop_size
        rows = top + np.arange(0, ch, step)
        cols = np.arange(0, cw, step)
        cols = left + (cw - 1 - cols if flip else cols)
        return (rows >= 0) & (rows < sh), (cols >= 0) & (cols < sw)


class EvalTransform(object):
    """Evaluation preprocessing: normalize and pad to a multiple of 8 (with the mean).

    Parameters
    ----------
    mean, std : see :func:`normalize`.
    multiple : int
        Pad height and width up to multiples of this (the network's output stride).

    Call ``t(img, label=None)``; returns (data (3, H', W') float32, label unchanged,
    (H, W) the size before padding).
    """

    def __init__(self, mean=RELEASE_MEAN, std=None, multiple=8):
        self.mean, self.std = _stats(mean, std)
        self.multiple = int(multiple)

    def __call__(self, img, label=None):
        data, size = pad_to_multiple(normalize(img, self.mean, self.std), self.multiple, 0.0)
        return data, label, size
