"""Inference: RGB image -> class probabilities -> trainId map (and colour map, overlay).

:class:`Segmenter` is the one inference path of the package: training validation, ``duc-hdc
evaluate``, ``duc-hdc predict`` and the demo all run images through it, so a number measured in
one place is the number every other place gets.

The protocol is the original release's (TuSimple-DUC ``test_full_image``): the image is
normalized with the model's own statistics (``net.normalization``), padded at the bottom and
right to a multiple of 8 with the mean (0 after normalization), run through the network, the
padding is cropped off at the logit resolution (``ceil(h / cell_width)`` rows,
``ceil(w / cell_width)`` columns), the softmax is resized bilinearly to the input size and the
argmax taken. Two extensions (Section 4 of the paper evaluates with both):

* sliding window: the padded image is tiled with fixed-size windows; the logits of overlapping
  windows are averaged (a count map records how many windows cover each logit cell);
* multi-scale + flip: the image is resized by each scale (and mirrored); the softmax of every
  pass, resized to the input size, is averaged.

This module also holds the file-level prediction behind ``duc-hdc predict`` (images, folders,
globs and videos -> trainId PNGs, colour maps, overlays).
"""
import glob
import logging
import os

import cv2
import mxnet as mx
import numpy as np

from ..data.labels import colorize, get_table, overlay
from ..data.transforms import normalize, pad_to_multiple
from .loader import load

__all__ = ["Segmenter", "predict_paths", "run_prediction",
           "default_dataset", "read_image", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

log = logging.getLogger(__name__)

#: The network's output stride: inputs must be padded to multiples of this.
NET_STRIDE = 8
MODES = ("whole", "sliding")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
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


def _window_starts(length, crop, stride):
    """Window offsets along one axis: 0, stride, ... until a window reaches ``length``."""
    n = max(-(-(length - crop) // stride), 0) + 1
    return [i * stride for i in range(n)]


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
                 stride=None, batch_size=1, hybridize=True, optimize=None, fp16=False):
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
        self.runner = self._inference_graph(net, hybridize, optimize, fp16)

    def _inference_graph(self, net, hybridize, optimize, fp16=False):
        """What ``_forward`` runs: the network, its fused graph (see ``optimize``) or its
        float16 version (``fp16``)."""
        from .graphs import InferenceNet, fp16_block, optimized_block

        if isinstance(net, InferenceNet):
            if fp16:
                raise ValueError("fp16 applies to a network, not to a compiled %s graph"
                                 % net.kind)
            return net
        if fp16:
            return fp16_block(net, self.ctx)
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
        return dict(mode=self.mode, scales=list(self.scales), flip=self.flip,
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
        (ch, cwid), (sy, sx) = self.crop_size, self.stride
        ys, xs = _window_starts(h, ch, sy), _window_starts(w, cwid, sx)
        ph, pw = ys[-1] + ch, xs[-1] + cwid
        windows, where = [], []
        for k, im in enumerate(images):
            # windows past the border see the mean (0 after normalization), as in whole mode
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


# ------------------------------------------------------------------------------ files
def _is_video(path):
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _is_image(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs):
    """Expand files, folders (recursively: images and videos) and glob patterns.

    Returns
    -------
    (list of (path, output stem), list of (input, reason))
        The inputs found, each with an output name relative to the output folder, and the
        inputs that matched nothing.
    """
    found, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            files = []
            for dirpath, _, names in os.walk(item):
                files += [os.path.join(dirpath, n) for n in names
                          if _is_image(n) or _is_video(n)]
            if not files:
                missing.append((item, "folder holds no images or videos"))
            for path in sorted(files):
                rel = os.path.relpath(path, item)
                found.append((path, os.path.splitext(rel)[0]))
        elif os.path.exists(item):
            found.append((item, os.path.splitext(os.path.basename(item))[0]))
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                missing.append((item, "no such file, folder or matching glob"))
            for path in matches:
                found.append((path, os.path.splitext(os.path.basename(path))[0]))
    # one output name per input, even when two folders hold files of the same name
    used, unique = {}, []
    for path, stem in found:
        n = used.get(stem, 0)
        used[stem] = n + 1
        unique.append((path, stem if n == 0 else "%s_%d" % (stem, n)))
    return unique, missing


def read_image(path):
    """Read an image file as (H, W, 3) uint8 RGB.

    Raises
    ------
    duc_hdc.data.recordio.BadSampleError
        Unreadable, truncated or corrupt file (the message names it).
    """
    from ..data.recordio import BadSampleError, check_encoded, decode_image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadSampleError(path, "cannot read (%s)" % e.strerror)
    check_encoded(data, path)
    return decode_image(data, path)


def _write(path, image):
    """cv2.imwrite with the folder created and failure reported (image given as RGB or 2-D)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if image.ndim == 3:
        image = image[:, :, ::-1]
    if not cv2.imwrite(path, np.ascontiguousarray(image)):
        raise OSError("could not write %s" % path)
    return path


def save_outputs(out_dir, stem, rgb, train_ids, dataset="cityscapes", overlay_image=True):
    """Write ``stem_trainIds.png``, ``stem_color.png`` and ``stem_overlay.png`` under out_dir."""
    paths = [_write(os.path.join(out_dir, stem + "_trainIds.png"), train_ids),
             _write(os.path.join(out_dir, stem + "_color.png"), colorize(train_ids, dataset))]
    if overlay_image:
        paths.append(_write(os.path.join(out_dir, stem + "_overlay.png"),
                            overlay(rgb, train_ids, dataset)))
    return paths


def _predict_video(segmenter, path, out_dir, stem, dataset, progress):
    """Frame by frame: per-frame trainId and colour PNGs, and an overlay video (MJPG .avi)."""
    from tqdm import tqdm

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        return 0
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, frames = None, 0
    video_path = os.path.join(out_dir, stem + "_overlay.avi")
    try:
        with tqdm(total=total, desc=os.path.basename(path), unit="frame",
                  disable=not progress) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                ids = segmenter.predict(rgb)
                save_outputs(os.path.join(out_dir, stem), "frame_%06d" % frames, rgb, ids,
                             dataset, overlay_image=False)
                if writer is None:
                    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
                    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                             (rgb.shape[1], rgb.shape[0]))
                    if not writer.isOpened():
                        raise OSError("could not open %s for writing (OpenCV VideoWriter, MJPG)"
                                      % video_path)
                writer.write(cv2.cvtColor(overlay(rgb, ids, dataset), cv2.COLOR_RGB2BGR))
                frames += 1
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frames:
        log.info("%s: %d frames -> %s", path, frames, video_path)
    return frames


def predict_paths(segmenter, inputs, out_dir, dataset="cityscapes", progress=True):
    """Predict images, folders, globs and videos; write trainIds, colour maps and overlays.

    For an image ``a/b.jpg``: ``OUT/b_trainIds.png`` (uint8 trainIds), ``OUT/b_color.png``
    (the dataset's palette) and ``OUT/b_overlay.png``. Images found in a folder keep their
    path relative to it. For a video ``v.mp4``: ``OUT/v/frame_NNNNNN_trainIds.png`` and
    ``_color.png`` per frame and ``OUT/v_overlay.avi``. Unreadable inputs are logged and
    skipped.

    Parameters
    ----------
    segmenter : Segmenter
    inputs : sequence of str
        Files, folders or glob patterns.
    out_dir : str
    dataset : str
        Palette: 'cityscapes', 'voc' or 'kitti_road'.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``images`` and ``frames`` predicted, ``videos`` read, ``skipped`` as a list of
        (input, reason).
    """
    from tqdm import tqdm

    from ..data.recordio import BadSampleError

    get_table(dataset)  # an unknown palette fails before any work
    found, skipped = expand_inputs(inputs)
    for item, reason in skipped:
        log.warning("skipping %s: %s", item, reason)
    os.makedirs(out_dir, exist_ok=True)
    images = [(p, s) for p, s in found if not _is_video(p)]
    videos = [(p, s) for p, s in found if _is_video(p)]
    result = dict(images=0, frames=0, videos=0, skipped=skipped)
    for path, stem in tqdm(images, desc="predict", unit="img", disable=not progress):
        try:
            rgb = read_image(path)
        except BadSampleError as e:
            log.warning("skipping unreadable image %s", e)
            skipped.append((path, e.reason))
            continue
        save_outputs(out_dir, stem, rgb, segmenter.predict(rgb), dataset)
        result["images"] += 1
    for path, stem in videos:
        frames = _predict_video(segmenter, path, out_dir, stem, dataset, progress)
        if frames == 0:
            log.warning("skipping unreadable video %s: OpenCV cannot decode any frame", path)
            skipped.append((path, "video without decodable frames"))
            continue
        result["videos"] += 1
        result["frames"] += frames
    return result


def default_dataset(classes):
    """The label table (palette) with ``classes`` classes, else 'cityscapes'."""
    from ..data.labels import DATASETS

    for name, table in DATASETS.items():
        if table.num_classes == classes:
            return name
    return "cityscapes"


def run_prediction(inputs, out_dir, model=None, params=None, classes=None, dataset=None,
                   progress=True, **segmenter_kwargs):
    """Everything ``duc-hdc predict`` does: build the Segmenter, then :func:`predict_paths`.

    Parameters
    ----------
    inputs : sequence of str
        Images, folders, globs, videos.
    out_dir : str
    model : str, optional
        Zoo or model name (see :meth:`Segmenter.from_name`), pretrained or with ``params``.
    params : str, optional
        Weights for ``model``, or alone a ``FILE.params`` with its sidecar.
    classes : int, optional
        Classes of a generic model name.
    dataset : str, optional
        Palette; default :func:`default_dataset` of the model's class count.
    **segmenter_kwargs
        ``ctx``, ``scales``, ``flip``, ``mode``, ``crop_size``, ``stride``, ``batch_size``.

    Returns
    -------
    dict
        See :func:`predict_paths`.
    """
    segmenter = Segmenter.from_name(model, params=params, classes=classes, **segmenter_kwargs)
    dataset = dataset or default_dataset(segmenter.classes)
    return predict_paths(segmenter, inputs, out_dir, dataset=dataset, progress=progress)
