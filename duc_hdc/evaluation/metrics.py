"""Segmentation metrics: confusion matrix -> pixel accuracy, per-class IoU, mean IoU.

The numbers follow the official Cityscapes evaluation
(``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) exactly, expressed on trainIds:

* Pixels whose ground truth is ``ignore_label`` are dropped entirely: they are neither true
  positives, false positives nor false negatives of any class.
* Pixels whose ground truth is an evaluated class ``c`` (``0 <= c < num_classes``) always count.
  A prediction outside the evaluated classes on such a pixel (``ignore_label``, a negative value
  or any value ``>= num_classes``; on Cityscapes: a labelId such as "static" or "parking" that
  has no trainId) is a **miss**: a false negative for ``c`` and a false positive for no class.
  It is never silently dropped. These pixels are kept in a separate column, see
  :attr:`SegmentationMetric.outside`.
* ``IoU_c = TP / (TP + FP + FN)``. A class whose union ``TP + FP + FN`` is empty (absent from
  the ground truth *and* never predicted on a valid pixel) has IoU ``NaN`` and is **left out of
  the mean**, as the official script does; it is not counted as 0. A class absent from the
  ground truth but predicted somewhere has IoU 0 and *is* in the mean.
* Pixel accuracy = correctly predicted pixels / all non-ignored ground-truth pixels (misses
  included in the denominator).
"""
import heapq
import logging
import math

import numpy as np

__all__ = ["SegmentationMetric", "WorstImages"]

logger = logging.getLogger(__name__)


def _to_numpy(array, what):
    """Return ``array`` (numpy, mx.nd or anything array-like) as a numpy integer array."""
    if hasattr(array, "asnumpy"):  # mx.nd.NDArray; avoids importing mxnet here
        array = array.asnumpy()
    array = np.asarray(array)
    if array.dtype.kind in "iub":
        return array
    if array.dtype.kind == "f":
        # mx.nd.argmax returns float32: accept whole numbers, refuse anything else
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.floor(array)):
            raise ValueError(
                "{} must hold integer class ids; got a {} array with non-integer values".format(
                    what, array.dtype))
        return array.astype(np.int64)
    raise TypeError("{} must be an integer array; got dtype {}".format(what, array.dtype))


def _nan_to_none(value):
    value = float(value)
    return None if math.isnan(value) else value


class SegmentationMetric(object):
    """Confusion-matrix segmentation metric (pixel accuracy, per-class IoU, mean IoU).

    Matches the official Cityscapes pixel-level evaluation on trainIds (see the module
    docstring for the exact rules on ignored pixels, out-of-range predictions and absent
    classes).

    Parameters
    ----------
    num_classes : int
        Number of evaluated classes; valid ids are ``0 .. num_classes - 1``.
    ignore_label : int, default 255
        Ground-truth value of pixels excluded from evaluation. As a prediction it is an
        ordinary miss.

    Attributes
    ----------
    confusion : numpy.ndarray, shape (num_classes, num_classes), int64
        ``confusion[g, p]`` = number of pixels with ground truth ``g`` predicted as ``p``.
    outside : numpy.ndarray, shape (num_classes,), int64
        ``outside[g]`` = pixels with ground truth ``g`` predicted as a value outside
        ``0 .. num_classes - 1`` (counted as false negatives of ``g``).
    iou : numpy.ndarray, shape (num_classes,), float64
        Per-class IoU; ``NaN`` where the class's union is empty.

    Examples
    --------
    >>> m = SegmentationMetric(3)
    >>> m.update(np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 0]]))
    >>> m.get()
    (0.6666666666666666, 0.5)
    """

    def __init__(self, num_classes, ignore_label=255):
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError("num_classes must be a positive integer, got {!r}".format(
                num_classes))
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError("ignore_label {} collides with an evaluated class id (0..{})".format(
                self.ignore_label, self.num_classes - 1))
        # columns 0..K-1: predicted class; column K: prediction outside the evaluated classes
        self._hist = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    # ---------------------------------------------------------------- accumulation
    def reset(self):
        """Clear all accumulated counts."""
        self._hist[...] = 0

    def update(self, labels, preds):
        """Accumulate one batch (or a list of batches, e.g. one per device).

        Parameters
        ----------
        labels : array-like of int, or list of them
            Ground-truth trainIds, any shape; ``ignore_label`` marks excluded pixels.
        preds : array-like of int, or list of them
            Predicted class ids, same shape as ``labels``. Float arrays holding whole numbers
            (``mx.nd.argmax`` output) are accepted.

        Raises
        ------
        ValueError
            Shapes differ, the lists differ in length, or ``labels`` holds a value that is
            neither a class id nor ``ignore_label``.
        """
        if isinstance(labels, (list, tuple)) or isinstance(preds, (list, tuple)):
            if not (isinstance(labels, (list, tuple)) and isinstance(preds, (list, tuple))):
                raise ValueError("labels and preds must both be lists or both be arrays")
            if len(labels) != len(preds):
                raise ValueError("got {} label arrays but {} prediction arrays".format(
                    len(labels), len(preds)))
            for label, pred in zip(labels, preds):
                self.update(label, pred)
            return
        labels = _to_numpy(labels, "labels")
        preds = _to_numpy(preds, "preds")
        if labels.shape != preds.shape:
            raise ValueError("labels and preds must have the same shape; got labels {} and "
                             "preds {}".format(labels.shape, preds.shape))
        labels = labels.reshape(-1).astype(np.int64, copy=False)
        preds = preds.reshape(-1).astype(np.int64, copy=False)

        k = self.num_classes
        valid = labels != self.ignore_label
        labels = labels[valid]
        preds = preds[valid]
        bad = (labels < 0) | (labels >= k)
        if bad.any():
            raise ValueError(
                "labels contain values {} that are neither class ids 0..{} nor the ignore label "
                "{} (were labelIds passed instead of trainIds?)".format(
                    np.unique(labels[bad])[:10].tolist(), k - 1, self.ignore_label))
        preds = np.where((preds >= 0) & (preds < k), preds, k)
        counts = np.bincount(labels * (k + 1) + preds, minlength=k * (k + 1))
        self._hist += counts.reshape(k, k + 1)

    def merge(self, other):
        """Add the counts of another metric (e.g. from another worker) into this one.

        Parameters
        ----------
        other : SegmentationMetric
            Must have the same ``num_classes`` and ``ignore_label``.

        Returns
        -------
        SegmentationMetric
            ``self``.
        """
        if not isinstance(other, SegmentationMetric):
            raise TypeError("can only merge another SegmentationMetric, got {}".format(
                type(other).__name__))
        if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
            raise ValueError(
                "cannot merge metrics with different settings: (num_classes, ignore_label) = {} "
                "vs {}".format((self.num_classes, self.ignore_label),
                               (other.num_classes, other.ignore_label)))
        self._hist += other._hist
        return self

    def __iadd__(self, other):
        return self.merge(other)

    def __add__(self, other):
        out = SegmentationMetric(self.num_classes, self.ignore_label)
        return out.merge(self).merge(other)

    # ---------------------------------------------------------------- results
    @property
    def confusion(self):
        """Confusion matrix (rows = ground truth, columns = prediction), a copy."""
        return self._hist[:, :self.num_classes].copy()

    @property
    def outside(self):
        """Per ground-truth class, pixels predicted outside the evaluated classes (a copy)."""
        return self._hist[:, self.num_classes].copy()

    @property
    def num_pixels(self):
        """Number of non-ignored ground-truth pixels seen so far."""
        return int(self._hist.sum())

    @property
    def iou(self):
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes whose union is empty."""
        conf = self._hist[:, :self.num_classes]
        tp = np.diag(conf).astype(np.float64)
        gt_total = self._hist.sum(axis=1)       # TP + FN, misses included
        pred_total = conf.sum(axis=0)           # TP + FP, valid ground truth only
        union = (gt_total + pred_total - np.diag(conf)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    @property
    def pixel_accuracy(self):
        """Correct pixels / non-ignored pixels; NaN before any valid pixel was seen."""
        total = self._hist.sum()
        return float(np.trace(self._hist[:, :self.num_classes]) / total) if total else float("nan")

    @property
    def mean_iou(self):
        """Mean of :attr:`iou` over classes with a non-empty union; NaN if there are none."""
        iou = self.iou
        present = ~np.isnan(iou)
        return float(iou[present].mean()) if present.any() else float("nan")

    def get(self):
        """Return ``(pixel_accuracy, mean_iou)`` as floats (NaN before any valid pixel)."""
        return self.pixel_accuracy, self.mean_iou

    def _check_names(self, names):
        if names is None:
            return [str(i) for i in range(self.num_classes)]
        names = list(names)
        if len(names) != self.num_classes:
            raise ValueError("got {} class names for {} classes".format(len(names),
                                                                        self.num_classes))
        return names

    def per_class_table(self, names=None):
        """Readable per-class table: IoU, accuracy (recall) and pixel counts.

        Parameters
        ----------
        names : sequence of str, optional
            One name per class; defaults to the class ids.

        Returns
        -------
        str
            A fixed-width table; classes with an empty union show ``n/a`` and are not in the
            mean.
        """
        names = self._check_names(names)
        iou = self.iou
        gt_total = self._hist.sum(axis=1)
        pred_total = self._hist[:, :self.num_classes].sum(axis=0)
        tp = np.diag(self._hist[:, :self.num_classes])
        width = max([len(n) for n in names] + [len("mean IoU")])
        fmt = "{:<%d}  {:>7}  {:>7}  {:>12}  {:>12}  {:>10}" % width
        lines = [fmt.format("class", "IoU", "acc", "gt pixels", "pred pixels", "outside"),
                 "-" * (width + 60)]
        for c, name in enumerate(names):
            acc = tp[c] / gt_total[c] if gt_total[c] else float("nan")
            lines.append(fmt.format(
                name, "n/a" if np.isnan(iou[c]) else "{:.4f}".format(iou[c]),
                "n/a" if np.isnan(acc) else "{:.4f}".format(acc),
                int(gt_total[c]), int(pred_total[c]), int(self._hist[c, self.num_classes])))
        lines.append("-" * (width + 60))
        pixacc, miou = self.get()
        lines.append("{:<{w}}  {:.4f}  (over {} of {} classes; n/a = absent, not counted)".format(
            "mean IoU", miou, int((~np.isnan(iou)).sum()), self.num_classes, w=width))
        lines.append("{:<{w}}  {:.4f}  ({} pixels)".format("pixel acc", pixacc, self.num_pixels,
                                                          w=width))
        return "\n".join(lines)

    def to_dict(self, names=None):
        """JSON-ready summary; NaN values become ``None``.

        Parameters
        ----------
        names : sequence of str, optional
            One name per class; defaults to the class ids as strings.

        Returns
        -------
        dict
            ``pixel_accuracy``, ``mean_iou``, ``num_pixels``, ``num_classes``, ``ignore_label``,
            ``class_iou`` (name -> IoU or None), ``confusion`` (list of lists) and ``outside``.
        """
        names = self._check_names(names)
        pixacc, miou = self.get()
        return {
            "pixel_accuracy": _nan_to_none(pixacc),
            "mean_iou": _nan_to_none(miou),
            "num_pixels": self.num_pixels,
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "class_iou": {n: _nan_to_none(v) for n, v in zip(names, self.iou)},
            "confusion": self.confusion.tolist(),
            "outside": self.outside.tolist(),
        }

    def __repr__(self):
        pixacc, miou = self.get()
        return "SegmentationMetric(num_classes={}, pixels={}, pixAcc={:.4f}, mIoU={:.4f})".format(
            self.num_classes, self.num_pixels, pixacc, miou)


class WorstImages(object):
    """Per-image scores of an evaluation, and the ``n`` worst images by per-image mIoU.

    Every image's name, mIoU and pixel accuracy are recorded (a few numbers per image); the
    arrays (image, label, prediction) are kept for the ``n`` lowest per-image mIoUs only, so
    memory stays bounded whatever the dataset's size. An image's mIoU is
    :attr:`SegmentationMetric.mean_iou` of that image alone (classes absent from the image and
    never predicted there are left out). Images without a labelled pixel have no mIoU and are
    not ranked. Ties keep the earlier image.

    Parameters
    ----------
    n : int
        How many images to keep (0: scores only).
    """

    def __init__(self, n=8):
        if int(n) != n or n < 0:
            raise ValueError("the number of worst images must be a whole number >= 0, got %r"
                             % (n,))
        self.n = int(n)
        self.per_image = []
        self._heap = []  # (-mIoU, -index, entry): the root is the best image kept

    def add(self, index, name, image_metric, image, label, pred):
        """Record image ``index`` (its own :class:`SegmentationMetric`) and maybe keep it."""
        pixel_accuracy, mean_iou = image_metric.get()
        score = dict(index=int(index), name=str(name),
                     mean_iou=None if math.isnan(mean_iou) else float(mean_iou),
                     pixel_accuracy=None if math.isnan(pixel_accuracy) else float(pixel_accuracy),
                     pixels=image_metric.num_pixels)
        self.per_image.append(score)
        if score["mean_iou"] is None or self.n == 0:
            return
        key = (-score["mean_iou"], -score["index"])
        if len(self._heap) == self.n and key <= self._heap[0][:2]:
            return  # no worse than every image kept
        entry = dict(score, image=np.array(image, copy=True), label=np.array(label, copy=True),
                     pred=np.array(pred, copy=True))
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, key + (entry,))
        else:
            heapq.heapreplace(self._heap, key + (entry,))

    def worst(self):
        """The kept images, worst first: dicts of the score plus ``image``, ``label``, ``pred``."""
        return [e for _, _, e in sorted(self._heap, key=lambda t: (-t[0], -t[1]))]
