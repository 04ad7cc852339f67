"""Inference: RGB image -> class probabilities -> trainId map.

:class:`Segmenter` is the one inference path of the package: training validation, ``duc-hdc
evaluate``, ``duc-hdc predict`` and the demo all run images through it, so a number measured in
one place is the number every other place gets.

The protocol is the original release's (TuSimple-DUC ``test_full_image``): the image is
normalized with the model's own statistics (``net.normalization``), padded at the bottom and
right to a multiple of 8 with the mean (0 after normalization), run through the network, the
padding is cropped off at the logit resolution (``ceil(h / cell_width)`` rows,
``ceil(w / cell_width)`` columns), the softmax is resized bilinearly to the input size and the
argmax taken. Two extensions (Section 4 of the paper evaluates with both):

* sliding window (as mmsegmentation's slide inference): windows start every ``stride`` pixels
  and the last one is moved back so that it ends at the image border, so every window lies
  inside the image and sees only image content (:func:`sliding_windows`); the logits of
  overlapping windows are averaged (a count map records how many windows cover each logit
  cell). An image smaller than the window along an axis is padded, as in whole mode, to a
  multiple of 8 only and run as one window along that axis;
* multi-scale + flip: the image is resized by each scale (and mirrored); the softmax of every
  pass, resized to the input size, is averaged.

Files (images, folders, globs, videos -> trainId PNGs, colour maps, overlays) are handled by
:mod:`duc_hdc.inference.io`.
"""
import collections
import logging

import cv2
import mxnet as mx
import numpy as np

from ..data.transforms import normalize, pad_to_multiple
from .loader import load

__all__ = ["Segmenter", "window_starts", "sliding_windows", "Windows", "NET_STRIDE", "MODES"]

log = logging.getLogger(__name__)

#: The network's output stride: inputs must be padded to multiples of this.
NET_STRIDE = 8
MODES = ("whole", "sliding")
# cv2.resize handles at most this many channels at once (CV_CN_MAX)
_CV_MAX_CHANNELS = 512


# ------------------------------------------------------------------------------ helpers
def _pair(value, what):
    """An int or (int, int) as a (height, width) tuple of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError("%s must be an integer or (height, width), got %r" % (what, value))
    if len(pair) != 2 or min(pair) <= 0 or any(p != v for p, v in zip(pair, value)):
        raise ValueError("%s must be positive integers (height, width), got %r" % (what, value))
    return pair


def _softmax(scores):
    """Softmax over axis 0 of a (C, h, w) float32 array."""
    e = np.exp(scores - scores.max(axis=0, keepdims=True))
    e /= e.sum(axis=0, keepdims=True)
    return e


def _resize_chw(array, height, width):
    """Bilinear resize of a (C, h, w) float32 array (``cv2.resize``, pixel centres aligned)."""
    c, h, w = array.shape
    if (h, w) == (height, width):
        return array
    out = np.empty((c, height, width), np.float32)
    hwc = np.ascontiguousarray(array.transpose(1, 2, 0))
    for start in range(0, c, _CV_MAX_CHANNELS):
        part = cv2.resize(hwc[:, :, start:start + _CV_MAX_CHANNELS], (width, height),
                          interpolation=cv2.INTER_LINEAR)
        out[start:start + _CV_MAX_CHANNELS] = part.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def window_starts(length, crop, stride):
    """Window offsets along one axis (mmsegmentation's slide inference).

    ``ceil((length - crop) / stride) + 1`` windows starting at ``min(i * stride, length - crop)``:
    every ``stride`` pixels, the last one moved back to end exactly at ``length``. A length up
    to ``crop`` gives the one offset 0 (the caller pads to the window, see
    :func:`sliding_windows`).

    >>> window_starts(2048, 800, 600)
    [0, 600, 1200, 1248]
    """
    if length <= crop:
        return [0]
    n = -(-(length - crop) // stride) + 1
    return [min(i * stride, length - crop) for i in range(n)]


#: The tiling of one image: ``padded`` (height, width) the image is padded to, ``window``
#: (height, width) of every window, ``ys`` / ``xs`` the window offsets.
Windows = collections.namedtuple("Windows", "padded window ys xs")


def sliding_windows(height, width, crop_size, stride, cell_width=1):
    """Where the sliding windows of an image of ``height`` x ``width`` pixels go.

    Along each axis: a length above the crop is padded to a multiple of ``cell_width`` only
    (fewer than ``cell_width`` pixels; logits are per cell) and tiled with crop-sized windows
    by :func:`window_starts`, the last ending at the (padded) border; a length up to the crop
    is padded to a multiple of 8 (as in whole mode) and run as one window of that size. No
    window reaches past the padded image, and every pixel lies in at least one window.

    Parameters
    ----------
    height, width : int
    crop_size, stride : (int, int)
        Multiples of 8 and of ``cell_width`` respectively (as :class:`Segmenter` checks).
    cell_width : int

    Returns
    -------
    Windows
    """
    padded, window, starts = [], [], []
    for length, crop, step in zip((height, width), crop_size, stride):
        if length <= crop:
            size = -(-length // NET_STRIDE) * NET_STRIDE
            padded.append(size)
            window.append(size)
            starts.append([0])
        else:
            size = -(-length // cell_width) * cell_width
            padded.append(size)
            window.append(crop)
            starts.append(window_starts(size, crop, step))
    return Windows(tuple(padded), tuple(window), starts[0], starts[1])


def _param_context(net):
    try:
        for param in net.collect_params().values():
            return param.list_ctx()[0]
    except (RuntimeError, AssertionError, IndexError):
        pass
    return mx.cpu()


# ------------------------------------------------------------------------------ Segmenter
class Segmenter(object):
    """Run a DUC-HDC network on RGB images of any size.

    Parameters
    ----------
    net : DUCHDC
        The network (``classes``, ``cell_width`` and ``normalization`` are read off it).
    ctx : mx.Context, optional
        Device of the input arrays; default: where the network's parameters live.
    scales : sequence of float
        Image scales; the softmax of all scales (and flips) is averaged.
    flip : bool
        Also run the horizontally mirrored image (and un-mirror its output).
    mode : {'whole', 'sliding'}
        Whole (padded) image, the release's protocol, or sliding windows.
    crop_size : int or (int, int), optional
        Sliding-window size (height, width), multiples of 8. Required for ``'sliding'``.
        The last window of a row or column ends at the image border (:func:`sliding_windows`).
    stride : int or (int, int), optional
        Sliding-window step, multiples of ``cell_width``; default about 2/3 of the crop.
    batch_size : int
        Windows (and flipped copies) run per forward pass.
    hybridize : bool
        Hybridize the network (``static_alloc=True``) now. A new input size re-runs shape
        inference, which is fine. Pass False when the caller (e.g. a training loop) manages it.
    optimize : bool, optional
        Run a fused inference graph of the network (:func:`duc_hdc.inference.graphs.optimized_block`:
        BatchNorm folded into the convolutions, MKLDNN subgraph fusion) instead of the network
        itself; outputs equal within float rounding. Default: on for CPU contexts when
        ``hybridize`` is on. The graph holds a copy of the weights taken now: build a new
        Segmenter after changing them. A network that is already an inference graph
        (:class:`duc_hdc.inference.graphs.InferenceNet`, e.g. an INT8 model) runs as it is.
    precision : {None, 'fp32', 'bf16', 'int8'}
        ``bf16``: the folded, MKLDNN-fused graph in bfloat16 (CPUs with AMX or AVX512_BF16);
        ``int8``: quantized, calibrated on ``calib_images`` (normalized (N, 3, H, W)); see
        :func:`duc_hdc.inference.graphs.inference_runner`. None / fp32: the default path. A
        compiled graph (an INT8 model) runs in its own precision.
    calib_images : numpy.ndarray, optional
        For ``precision='int8'`` on a network.
    fp16 : bool
        GPU only: run the network in float16 with MXNet AMP
        (:func:`duc_hdc.inference.graphs.fp16_block`); scores are averaged in float32. Unmeasured
        here (no GPU).

    Examples
    --------
    >>> seg = Segmenter(get_model('duc_hdc_resnet18', classes=5, base_width=8))
    >>> seg.predict(np.zeros((37, 70, 3), np.uint8)).shape
    (37, 70)
    """

    def __init__(self, net, ctx=None, scales=(1.0,), flip=False, mode="whole", crop_size=None,
                 stride=None, batch_size=1, hybridize=True, optimize=None, fp16=False,
                 precision=None, calib_images=None):
        for attr in ("classes", "cell_width", "normalization"):
            if not hasattr(net, attr):
                raise TypeError("Segmenter needs a DUCHDC network (with .%s), got %s"
                                % (attr, type(net).__name__))
        if mode not in MODES:
            raise ValueError("mode %r: choose one of %s" % (mode, ", ".join(MODES)))
        try:
            scales = tuple(float(s) for s in scales)
        except (TypeError, ValueError):
            raise ValueError("scales must be a sequence of numbers, got %r" % (scales,))
        if not scales or min(scales) <= 0:
            raise ValueError("scales must be positive numbers, got %r" % (scales,))
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer, got %r" % (batch_size,))
        self.net = net
        self.ctx = ctx or _param_context(net)
        self.classes = int(net.classes)
        self.cell_width = int(net.cell_width)
        self.scales = scales
        self.flip = bool(flip)
        self.mode = mode
        self.batch_size = int(batch_size)
        norm = net.normalization
        self.mean = tuple(norm["mean"])
        self.std = None if norm["std"] is None else tuple(norm["std"])
        self.crop_size = self.stride = None
        if mode == "sliding":
            if crop_size is None:
                raise ValueError("mode 'sliding' needs crop_size (height, width)")
            self.crop_size = _pair(crop_size, "crop_size")
            if any(c % NET_STRIDE for c in self.crop_size):
                raise ValueError("crop_size %r must be multiples of %d"
                                 % (self.crop_size, NET_STRIDE))
            if stride is None:
                stride = tuple(max(NET_STRIDE, (2 * c // 3) // NET_STRIDE * NET_STRIDE)
                               for c in self.crop_size)
            self.stride = _pair(stride, "stride")
            if any(s % self.cell_width for s in self.stride):
                raise ValueError("stride %r must be multiples of the cell width %d"
                                 % (self.stride, self.cell_width))
            if any(s > c for s, c in zip(self.stride, self.crop_size)):
                raise ValueError("stride %r larger than crop_size %r would skip pixels"
                                 % (self.stride, self.crop_size))
        elif crop_size is not None or stride is not None:
            raise ValueError("crop_size and stride apply to mode 'sliding' only (mode is %r)"
                             % mode)
        self.precision = precision
        self.runner = self._inference_graph(net, hybridize, optimize, fp16, precision,
                                            calib_images)

    def _inference_graph(self, net, hybridize, optimize, fp16=False, precision=None,
                         calib_images=None):
        """What ``_forward`` runs: the network, its fused graph (see ``optimize``), its
        float16 version (``fp16``), or its bf16 / int8 graph (``precision``)."""
        from .graphs import InferenceNet, fp16_block, inference_runner, optimized_block

        if isinstance(net, InferenceNet):
            if fp16:
                raise ValueError("fp16 applies to a network, not to a compiled %s graph"
                                 % net.kind)
            # a compiled graph runs in its own precision; another one is refused there
            return inference_runner(net, precision, ctx=self.ctx)
        if fp16:
            return fp16_block(net, self.ctx)
        if precision in ("bf16", "int8"):
            return inference_runner(net, precision, ctx=self.ctx, calib_images=calib_images)
        if optimize is None:
            optimize = bool(hybridize) and self.ctx.device_type == "cpu"
        if hybridize:
            net.hybridize(static_alloc=True)
        if not optimize:
            return net
        return optimized_block(net, backend="MKLDNN" if self.ctx.device_type == "cpu" else None,
                               ctx=self.ctx)

    @classmethod
    def from_name(cls, name_or_params=None, params=None, classes=None, overrides=None, root=None,
                  base_url=None, ctx=None, config=None, **kwargs):
        """A Segmenter for any model :func:`duc_hdc.inference.loader.load` takes.

        Parameters
        ----------
        name_or_params : str
            One of: a ``FILE.params`` with its ``FILE.json`` sidecar (as written by training,
            ``duc-hdc convert`` and ``duc-hdc export``); an INT8 model written by ``duc-hdc
            quantize`` (its ``PREFIX`` or ``PREFIX-0000.params``); a zoo name (``duc-hdc download
            --list``); a model name with zoo weights (``duc_hdc_resnet101_cityscapes``); or,
            together with ``params``, any model name (``duc-hdc models``).
        params : str, optional
            Weights for the model ``name_or_params`` (no sidecar needed).
        classes : int, optional
            Classes for a generic model name.
        overrides : dict, optional
            Further :func:`duc_hdc.get_model` settings for a model name with ``params``
            (``base_width``, ``cell_width``, ...).
        root, base_url : str, optional
            Weight cache and mirror (see :func:`duc_hdc.hub.zoo.get_weights`).
        ctx : mx.Context, optional
        **kwargs
            :class:`Segmenter` options (``scales``, ``flip``, ``mode``, ...).

        Raises
        ------
        ValueError
            Unknown name (the message lists the known ones), or weights that do not fit the
            model (the message names the first mismatching parameter).
        FileNotFoundError
            A parameter file or its sidecar is missing.
        """
        net = load(name_or_params, params=params, config=config, ctx=ctx, classes=classes,
                   overrides=overrides, root=root, base_url=base_url)
        return cls(net, ctx=ctx, **kwargs)

    def __repr__(self):
        extra = ""
        if self.mode == "sliding":
            extra = ", crop_size=%r, stride=%r" % (self.crop_size, self.stride)
        return ("Segmenter(classes=%d, cell_width=%d, mode=%r, scales=%r, flip=%r%s)"
                % (self.classes, self.cell_width, self.mode, self.scales, self.flip, extra))

    @property
    def settings(self):
        """The inference settings, JSON-ready (recorded with evaluation results)."""
        from .graphs import precision_of

        return dict(mode=self.mode, scales=list(self.scales), flip=self.flip,
                    precision=precision_of(self.runner),
                    crop_size=None if self.crop_size is None else list(self.crop_size),
                    stride=None if self.stride is None else list(self.stride),
                    normalization=dict(mean=list(self.mean),
                                       std=None if self.std is None else list(self.std)))

    # -------------------------------------------------------------------- public API
    def logits(self, rgb):
        """Class probabilities of an image, at the image's size.

        Parameters
        ----------
        rgb : numpy.ndarray
            (H, W, 3) uint8 RGB image, any size.

        Returns
        -------
        numpy.ndarray
            (classes, H, W) float32 softmax probabilities, averaged over scales and flips.
        """
        rgb = self._check_image(rgb)
        h, w = rgb.shape[:2]
        total = np.zeros((self.classes, h, w), np.float32)
        passes = 0
        for scale in self.scales:
            img = rgb
            if scale != 1.0:
                size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
                img = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            chw = normalize(img, self.mean, self.std)
            variants = [chw, np.ascontiguousarray(chw[:, :, ::-1])] if self.flip else [chw]
            for k, scores in enumerate(self._low_res_scores(variants)):
                probs = _softmax(scores)
                if k == 1:
                    probs = probs[:, :, ::-1]
                total += _resize_chw(np.ascontiguousarray(probs), h, w)
                passes += 1
        total /= passes
        return total

    def predict(self, rgb):
        """The trainId map of an image: (H, W) uint8 (argmax of :meth:`logits`)."""
        return self.logits(rgb).argmax(axis=0).astype(np.uint8)

    __call__ = predict

    # -------------------------------------------------------------------- internals
    def _check_image(self, rgb):
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
            raise ValueError("expected an (H, W, 3) RGB image, got shape %s" % (rgb.shape,))
        if rgb.dtype != np.uint8:
            raise ValueError("expected a uint8 RGB image (0..255), got dtype %s" % rgb.dtype)
        return rgb

    def _forward(self, arrays):
        """Run (3, H, W) arrays of one size through the network in batches; yield (C, h, w)."""
        for start in range(0, len(arrays), self.batch_size):
            batch = np.stack(arrays[start:start + self.batch_size])
            out = self.runner(mx.nd.array(batch, ctx=self.ctx))
            out = (out if out.dtype == np.float32 else out.astype("float32")).asnumpy()
            for item in out:
                yield item

    def _low_res_scores(self, images):
        """Logits of normalized (3, h, w) images of one size, padding cropped off.

        Returns a list of (classes, ceil(h / cell_width), ceil(w / cell_width)) arrays.
        """
        cw = self.cell_width
        h, w = images[0].shape[1:]
        oh, ow = -(-h // cw), -(-w // cw)
        if self.mode == "whole":
            padded = [pad_to_multiple(im, NET_STRIDE, 0.0)[0] for im in images]
            return [out[:, :oh, :ow] for out in self._forward(padded)]
        tiles = sliding_windows(h, w, self.crop_size, self.stride, cw)
        (ph, pw), (ch, cwid), ys, xs = tiles
        windows, where = [], []
        for k, im in enumerate(images):
            # padding (only up to the next cell / multiple of 8) is the mean: 0 after normalization
            padded = np.pad(im, ((0, 0), (0, ph - h), (0, pw - w)), mode="constant")
            for y in ys:
                for x in xs:
                    windows.append(padded[:, y:y + ch, x:x + cwid])
                    where.append((k, y // cw, x // cw))
        lh, lw = ch // cw, cwid // cw
        sums = [np.zeros((self.classes, ph // cw, pw // cw), np.float32) for _ in images]
        count = np.zeros((ph // cw, pw // cw), np.float32)
        for y in ys:
            for x in xs:
                count[y // cw:y // cw + lh, x // cw:x // cw + lw] += 1
        for (k, y, x), out in zip(where, self._forward(windows)):
            sums[k][:, y:y + lh, x:x + lw] += out
        return [(s / count)[:, :oh, :ow] for s in sums]
