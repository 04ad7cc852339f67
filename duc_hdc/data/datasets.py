"""Datasets over indexed RecordIO files and over the raw dataset folders; converters; loaders.

Every dataset here yields ``(image (H, W, 3) uint8 RGB, label (H, W) uint8 trainIds)`` and has
``.meta(i)`` (a dict with at least ``name`` and ``anchors``) and ``.sample(i)`` (image, label,
meta), so the training pipeline runs the same over a ``.rec`` file or a folder.

Raw layouts (each source is a list of :class:`Sample`; the converters and the folder datasets
share them, so both read the same files the same way):

* Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (or ``gtCoarse/..._gtCoarse_labelIds``).
* PASCAL VOC 2012: ``JPEGImages/<name>.jpg``, palette PNGs ``SegmentationClass/<name>.png``
  (255 = boundary), ``ImageSets/Segmentation/<split>.txt``; the SBD augmented set
  (``dataset/img/<name>.jpg``, ``dataset/cls/<name>.mat`` holding ``GTcls.Segmentation``,
  ``dataset/train.txt`` and ``val.txt``) for ``train_aug``.
* KITTI road: ``data_road/training/image_2/<cat>_<num>.png`` with
  ``training/gt_image_2/<cat>_road_<num>.png``; ``testing/image_2`` has no labels.
"""
import collections
import glob
import logging
import os
import time

import numpy as np

from . import labels as _labels
from .recordio import (BadSampleError, ConversionReport, RecordFileError, RecordWriter,
                       check_encoded, decode_image, decode_label, encode_image_jpeg,
                       encode_label, open_indexed, patch_anchors, unpack_record)

logger = logging.getLogger(__name__)

__all__ = [
    "Sample",
    "SegRecordDataset",
    "CityscapesFolder",
    "VOCFolder",
    "KittiRoadFolder",
    "AugmentedDataset",
    "build_train_loader",
    "build_eval_dataset",
    "cityscapes_samples",
    "voc_samples",
    "kitti_road_samples",
    "convert_samples",
    "convert_cityscapes",
    "convert_voc",
    "convert_kitti_road",
]

#: One source image: ``label_kind`` says how to read ``label_path`` (None: no label).
Sample = collections.namedtuple("Sample", ["name", "image_path", "label_path", "label_kind",
                                           "root"])

CITYSCAPES_SPLITS = ("train", "val", "test", "train_extra")
VOC_SPLITS = ("train_aug", "train", "val", "trainval")
KITTI_ROAD_SPLITS = ("train", "test")


# ------------------------------------------------------------------------- file reading

def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError) as err:
        raise BadSampleError(path, "cannot read (%s)" % (err.strerror or err))


def read_image_file(path):
    """Read and check an image file: returns (bytes, RGB array)."""
    data = _read_bytes(path)
    check_encoded(data, path)
    return data, decode_image(data, path)


def _check_values(raw, dataset, path):
    bad = _labels.invalid_values(raw, dataset)
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise BadSampleError(path, "label values outside the %s table: %s" % (dataset, shown))


def _load_cityscapes_label(path):
    data = _read_bytes(path)
    check_encoded(data, path)
    raw = decode_label(data, path)
    _check_values(raw, "cityscapes", path)
    return _labels.cityscapes_id_to_train_id(raw)


def _load_voc_png(path):
    # OpenCV expands palette PNGs to colours; PIL returns the palette indices (the classes)
    from PIL import Image

    data = _read_bytes(path)
    check_encoded(data, path)
    try:
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            raw = np.array(im)
    except Exception as err:  # PIL raises many types for damaged files
        raise BadSampleError(path, "corrupt or truncated label (%s)" % err)
    if mode not in ("P", "L"):
        if mode in ("RGB", "RGBA"):  # colour-coded: map the VOC palette back to indices
            raw = _voc_colors_to_index(raw[..., :3], path)
        else:
            raise BadSampleError(path, "VOC label must be a palette or grey PNG, got mode %s"
                                 % mode)
    _check_values(raw, "voc", path)
    return _labels.raw_to_train_id(raw, "voc")


def _voc_colors_to_index(rgb, path):
    cmap = _labels.voc_colormap(256).astype(np.int64)
    key = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    lut = dict((int(k), i) for i, k in enumerate(key) if _labels.DATASETS["voc"].valid_raw[i])
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(codes, return_inverse=True)
    missing = [int(u) for u in uniq if int(u) not in lut]
    if missing:
        shown = ", ".join("(%d, %d, %d)" % (u >> 16, (u >> 8) & 255, u & 255) for u in missing[:5])
        raise BadSampleError(path, "label colours outside the VOC palette: %s" % shown)
    return np.array([lut[int(u)] for u in uniq], np.uint8)[inv].reshape(rgb.shape[:2])


def _load_sbd_mat(path):
    import scipy.io

    if not os.path.isfile(path):
        raise BadSampleError(path, "no such file")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        raw = np.asarray(mat["GTcls"].Segmentation)
    except KeyError as err:
        raise BadSampleError(path, "no GTcls.Segmentation in the .mat file (%s)" % err)
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, ...
        raise BadSampleError(path, "corrupt or truncated .mat file (%s)" % err)
    if raw.ndim != 2:
        raise BadSampleError(path, "GTcls.Segmentation must be 2-D, got shape %s" % (raw.shape,))
    bad = [int(v) for v in np.unique(raw) if not 0 <= v < len(_labels.VOC_NAMES)]
    if bad:
        raise BadSampleError(path, "label values outside the VOC table: %s"
                             % ", ".join(str(v) for v in bad[:10]))
    return raw.astype(np.uint8)


def _load_kitti_road(path):
    data = _read_bytes(path)
    check_encoded(data, path)
    rgb = decode_image(data, path)
    return _labels.kitti_road_color_to_train_id(rgb)


LABEL_LOADERS = {
    "cityscapes": _load_cityscapes_label,
    "voc_png": _load_voc_png,
    "sbd_mat": _load_sbd_mat,
    "kitti_road": _load_kitti_road,
}


def load_sample(sample, keep_bytes=False):
    """Read one :class:`Sample`: (image bytes or None, image RGB, label trainIds or None).

    Raises
    ------
    BadSampleError
        Naming the file when the image or label is missing, corrupt, truncated, of another
        size than the image, or holds values outside the dataset's table.
    """
    data, img = read_image_file(sample.image_path)
    label = None
    if sample.label_kind is not None:
        if not os.path.isfile(sample.label_path):
            raise BadSampleError(sample.image_path, "no label: %s does not exist"
                                 % sample.label_path)
        label = LABEL_LOADERS[sample.label_kind](sample.label_path)
        if label.shape != img.shape[:2]:
            raise BadSampleError(sample.label_path, "label is %dx%d but its image %s is %dx%d"
                                 % (label.shape[0], label.shape[1], sample.image_path,
                                    img.shape[0], img.shape[1]))
    return (data if keep_bytes else None), img, label


def _sample_meta(sample, img):
    h, w = img.shape[:2]
    rel = lambda p: None if p is None else os.path.relpath(p, sample.root)
    return {"name": sample.name, "image": rel(sample.image_path), "label": rel(sample.label_path),
            "height": h, "width": w, "anchors": patch_anchors(h, w)}


# ------------------------------------------------------------------------------ sources

def cityscapes_samples(root, split, coarse=False):
    """List a Cityscapes split in the official layout.

    Parameters
    ----------
    root : str
        Folder holding ``leftImg8bit/`` and ``gtFine/`` (and ``gtCoarse/``).
    split : str
        'train', 'val', 'test' (images only) or 'train_extra' (coarse labels only).
    coarse : bool
        Use ``gtCoarse`` labels instead of ``gtFine``.

    Returns
    -------
    list of Sample
        Sorted by name. The label file need not exist (checked when read).
    """
    if split not in CITYSCAPES_SPLITS:
        raise ValueError("unknown Cityscapes split %r; choose from %s"
                         % (split, ", ".join(CITYSCAPES_SPLITS)))
    if split == "train_extra" and not coarse:
        raise ValueError("split 'train_extra' has only coarse labels: add --coarse "
                         "(coarse=True)")
    img_dir = os.path.join(root, "leftImg8bit", split)
    pattern = os.path.join(img_dir, "*", "*_leftImg8bit.png")
    images = sorted(glob.glob(pattern))
    if not images:
        raise BadSampleError(img_dir, "empty split: no image matches %s" % pattern)
    gt = "gtCoarse" if coarse else "gtFine"
    out = []
    for path in images:
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len("_leftImg8bit.png")]
        if split == "test":
            out.append(Sample(stem, path, None, None, root))
        else:
            label = os.path.join(root, gt, split, city, "%s_%s_labelIds.png" % (stem, gt))
            out.append(Sample(stem, path, label, "cityscapes", root))
    return out


def _read_list(path):
    if not os.path.isfile(path):
        raise BadSampleError(path, "split list not found")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def voc_samples(voc_root, split, sbd_root=None):
    """List a PASCAL VOC 2012 split, or ``train_aug`` with the SBD annotations.

    Parameters
    ----------
    voc_root : str
        ``VOCdevkit/VOC2012`` (JPEGImages, SegmentationClass, ImageSets/Segmentation).
    split : str
        'train', 'val', 'trainval' (VOC lists), or 'train_aug': VOC train + SBD train + SBD
        val, minus every VOC val image (10,582 images with the full data sets).
    sbd_root : str
        SBD ``benchmark_RELEASE/dataset`` (img, cls, train.txt, val.txt); needed for train_aug.

    Returns
    -------
    list of Sample
        VOC's own annotation (with its boundary band) is used when it exists, SBD's otherwise.
    """
    if split not in VOC_SPLITS:
        raise ValueError("unknown VOC split %r; choose from %s" % (split, ", ".join(VOC_SPLITS)))
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    jpeg = lambda n: os.path.join(voc_root, "JPEGImages", n + ".jpg")
    png = lambda n: os.path.join(voc_root, "SegmentationClass", n + ".png")
    if split != "train_aug":
        names = _read_list(os.path.join(lists, split + ".txt"))
        if not names:
            raise BadSampleError(os.path.join(lists, split + ".txt"), "empty split list")
        return [Sample(n, jpeg(n), png(n), "voc_png", voc_root) for n in names]
    if sbd_root is None:
        raise ValueError("split 'train_aug' needs the SBD dataset folder (--sbd-root)")
    voc_train = _read_list(os.path.join(lists, "train.txt"))
    voc_val = set(_read_list(os.path.join(lists, "val.txt")))
    sbd = _read_list(os.path.join(sbd_root, "train.txt")) + \
        _read_list(os.path.join(sbd_root, "val.txt"))
    names = sorted(set(voc_train) | set(sbd))
    names = [n for n in names if n not in voc_val]
    if not names:
        raise BadSampleError(sbd_root, "empty split: train_aug has no image")
    voc_labelled = set(voc_train)
    out = []
    for n in names:
        img = jpeg(n)
        if not os.path.isfile(img) and os.path.isfile(os.path.join(sbd_root, "img", n + ".jpg")):
            img = os.path.join(sbd_root, "img", n + ".jpg")
        if n in voc_labelled or os.path.isfile(png(n)):
            out.append(Sample(n, img, png(n), "voc_png", voc_root))
        else:
            out.append(Sample(n, img, os.path.join(sbd_root, "cls", n + ".mat"), "sbd_mat",
                              voc_root))
    return out


def kitti_road_samples(root, split):
    """List KITTI road images: ``split`` 'train' (with road labels) or 'test' (images only).

    Parameters
    ----------
    root : str
        The ``data_road`` folder (``training/``, ``testing/``).
    """
    if split not in KITTI_ROAD_SPLITS:
        raise ValueError("unknown KITTI road split %r; choose from %s"
                         % (split, ", ".join(KITTI_ROAD_SPLITS)))
    sub = "training" if split == "train" else "testing"
    img_dir = os.path.join(root, sub, "image_2")
    images = sorted(glob.glob(os.path.join(img_dir, "*.png")))
    if not images:
        raise BadSampleError(img_dir, "empty split: no *.png image")
    out = []
    for path in images:
        name = os.path.splitext(os.path.basename(path))[0]  # e.g. um_000000
        if split == "test":
            out.append(Sample(name, path, None, None, root))
            continue
        cat, _, num = name.partition("_")
        label = os.path.join(root, "training", "gt_image_2", "%s_road_%s.png" % (cat, num))
        out.append(Sample(name, path, label, "kitti_road", root))
    return out


# ---------------------------------------------------------------------------- converting

def _convert_one(args):
    sample, encoding, quality = args
    data, img, label = load_sample(sample, keep_bytes=(encoding == "raw"))
    if encoding == "jpg":
        data = encode_image_jpeg(img, quality)
    meta = _sample_meta(sample, img)
    return data, (None if label is None else encode_label(label)), meta


def convert_samples(samples, out_prefix, encoding="raw", quality=95, skip_bad=False,
                    num_workers=1, progress=True, extra_meta=None):
    """Write samples to ``out_prefix.rec/.idx/.lst``.

    Parameters
    ----------
    samples : list of Sample
        What to convert, in order.
    out_prefix : str
        Output path without extension.
    encoding : {'raw', 'jpg'}
        'raw' stores the source image bytes as they are (lossless); 'jpg' re-encodes.
    quality : int
        JPEG quality for ``encoding='jpg'``.
    skip_bad : bool
        Skip (and report) bad samples instead of stopping at the first one.
    num_workers : int
        Decode / check in this many processes (records are written in order).
    progress : bool
        Show a tqdm progress bar.
    extra_meta : dict or None
        Added to every record's metadata (e.g. dataset, split).

    Returns
    -------
    ConversionReport
        ``skipped`` is a list of (path, reason).

    Raises
    ------
    BadSampleError
        On the first bad sample unless ``skip_bad``; nothing is written then.
    """
    from tqdm import tqdm

    if encoding not in ("raw", "jpg"):
        raise ValueError("encoding must be 'raw' or 'jpg', got %r" % (encoding,))
    if not 1 <= int(quality) <= 100:
        raise ValueError("JPEG quality must be in 1..100, got %r" % (quality,))
    samples = list(samples)
    if not samples:
        raise BadSampleError(out_prefix, "empty split: nothing to convert")
    start = time.time()
    skipped = []
    pool = None
    jobs = [(s, encoding, quality) for s in samples]
    if num_workers > 1:
        import multiprocessing

        pool = multiprocessing.Pool(num_workers)
        results = pool.imap(_safe_convert_one, jobs, chunksize=4)
    else:
        results = map(_safe_convert_one, jobs)
    bar = tqdm(results, total=len(jobs), desc=os.path.basename(out_prefix), unit="img",
               disable=not progress)
    try:
        with RecordWriter(out_prefix) as writer:
            for result in bar:
                if isinstance(result, BadSampleError):
                    if not skip_bad:
                        raise result
                    logger.warning("skipping %s", result)
                    skipped.append((result.path, result.reason))
                    continue
                image_bytes, label_bytes, meta = result
                if extra_meta:
                    meta.update(extra_meta)
                writer.write(image_bytes, label_bytes, meta)
            if writer.count == 0:
                raise BadSampleError(out_prefix, "every sample was bad; nothing written")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    size = os.path.getsize(out_prefix + ".rec")
    return ConversionReport(out_prefix, writer.count, skipped, size, time.time() - start)


def _safe_convert_one(args):
    try:
        return _convert_one(args)
    except BadSampleError as err:
        return err


def convert_cityscapes(root, split, out_prefix, coarse=False, **kwargs):
    """Convert a Cityscapes split (labelIds -> trainIds); see :func:`convert_samples`."""
    samples = cityscapes_samples(root, split, coarse)
    extra = {"dataset": "cityscapes", "split": split}
    return convert_samples(samples, out_prefix, extra_meta=extra, **kwargs)


def convert_voc(voc_root, split, out_prefix, sbd_root=None, **kwargs):
    """Convert a PASCAL VOC 2012 split (or ``train_aug`` with SBD); see :func:`convert_samples`."""
    samples = voc_samples(voc_root, split, sbd_root)
    return convert_samples(samples, out_prefix, extra_meta={"dataset": "voc", "split": split},
                           **kwargs)


def convert_kitti_road(root, split, out_prefix, **kwargs):
    """Convert KITTI road (colour ground truth -> trainIds); see :func:`convert_samples`."""
    samples = kitti_road_samples(root, split)
    return convert_samples(samples, out_prefix,
                           extra_meta={"dataset": "kitti_road", "split": split}, **kwargs)


# ------------------------------------------------------------------------------ datasets

def _gluon_dataset_base():
    from mxnet.gluon.data import Dataset

    return Dataset


class SegRecordDataset(_gluon_dataset_base()):
    """Random access to a ``.rec`` written by the converters.

    Parameters
    ----------
    path_to_rec : str
        ``PREFIX.rec``; ``PREFIX.idx`` must sit beside it.
    verify : bool
        Check on opening that the index matches the file (8 bytes read per record).

    Item ``i`` is (image (H, W, 3) uint8 RGB, label (H, W) uint8 trainIds) as numpy arrays.
    A record without label (a test split) gives ``label = None``.

    Raises
    ------
    RecordFileError
        If the .rec or .idx is missing or they do not match.
    """

    def __init__(self, path_to_rec, verify=True):
        self.path = str(path_to_rec)
        self._record = open_indexed(self.path, verify=verify)
        self._keys = sorted(self._record.keys)

    def __len__(self):
        return len(self._keys)

    def _read(self, i):
        if not -len(self._keys) <= i < len(self._keys):
            raise IndexError("record %d out of range (%s has %d)" % (i, self.path, len(self)))
        key = self._keys[i]
        source = "%s record %d" % (self.path, key)
        index, meta, image, label = unpack_record(self._record.read_idx(key), source)
        if index != key:
            raise RecordFileError("%s does not match %s: offset of key %d holds record %d"
                                  % (os.path.splitext(self.path)[0] + ".idx", self.path, key,
                                     index))
        return source, meta, image, label

    def sample(self, i):
        """(image, label or None, meta) of record ``i``."""
        source, meta, image, label = self._read(i)
        where = "%s (%s)" % (source, meta.get("name"))
        img = decode_image(image, where)
        lab = None if label is None else decode_label(label, where)
        return img, lab, meta

    def __getitem__(self, i):
        img, lab, _ = self.sample(i)
        return img, lab

    def meta(self, i):
        """Metadata of record ``i``: name, image / label paths, height, width, anchors
        ([row, col] pairs), dataset, split."""
        return self._read(i)[1]


class _FolderDataset(_gluon_dataset_base()):
    """Items read from a list of :class:`Sample` (the raw dataset folders)."""

    def __init__(self, samples):
        self.samples = list(samples)

    def __len__(self):
        return len(self.samples)

    def sample(self, i):
        """(image, label or None, meta) of item ``i``."""
        _, img, label = load_sample(self.samples[i])
        return img, label, _sample_meta(self.samples[i], img)

    def __getitem__(self, i):
        _, img, label = load_sample(self.samples[i])
        return img, label

    def meta(self, i):
        """Metadata of item ``i`` (same keys as :meth:`SegRecordDataset.meta`); reads the image
        header to know its size."""
        return self.sample(i)[2]


class CityscapesFolder(_FolderDataset):
    """A Cityscapes split read from the official folders (labels mapped to trainIds)."""

    def __init__(self, root, split, coarse=False):
        super(CityscapesFolder, self).__init__(cityscapes_samples(root, split, coarse))


class VOCFolder(_FolderDataset):
    """A PASCAL VOC 2012 split (``train_aug`` needs ``sbd_root``) read from the folders."""

    def __init__(self, voc_root, split, sbd_root=None):
        super(VOCFolder, self).__init__(voc_samples(voc_root, split, sbd_root))


class KittiRoadFolder(_FolderDataset):
    """KITTI road read from ``data_road`` (road = 1, non-road = 0, other colours = 255)."""

    def __init__(self, root, split):
        super(KittiRoadFolder, self).__init__(kitti_road_samples(root, split))


# ------------------------------------------------------------------------------- loaders

def item_rng(seed, epoch, index):
    """The augmentation generator of item ``index`` in ``epoch`` (independent of workers)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class AugmentedDataset(_gluon_dataset_base()):
    """Applies a joint transform with a generator derived from (seed, epoch, index).

    Parameters
    ----------
    base : dataset with ``.sample(i)`` (SegRecordDataset or a folder dataset)
    transform : callable ``(img, label, anchors, rng) -> (data, label)``
    seed, epoch : int
    """

    def __init__(self, base, transform, seed=0, epoch=0):
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label, meta = self.base.sample(i)
        if label is None:
            raise ValueError("%s item %d (%s) has no label; a training set needs labels"
                             % (getattr(self.base, "path", type(self.base).__name__), i,
                                meta.get("name")))
        return self.transform(img, label, meta.get("anchors"), item_rng(self.seed, self.epoch, i))


class _IndexSampler(object):
    """A fixed sequence of indices (gluon samplers are plain iterables with a length)."""

    def __init__(self, indices):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def epoch_indices(num_items, seed, epoch, shard=(0, 1), shuffle=True):
    """The item order of one shard for (seed, epoch).

    Every shard sees ``num_items // num_shards`` items of one common permutation, so all
    workers of a distributed job run the same number of batches.
    """
    rank, num_shards = int(shard[0]), int(shard[1])
    if num_shards < 1 or not 0 <= rank < num_shards:
        raise ValueError("shard must be (rank, num_shards) with 0 <= rank < num_shards, got %r"
                         % (shard,))
    order = np.arange(num_items)
    if shuffle:
        # a stream apart from the items' augmentation streams ([seed, epoch, index])
        order = np.random.default_rng([int(seed), int(epoch), 2 ** 32 - 1]).permutation(num_items)
    per_shard = num_items // num_shards
    return order[rank * per_shard: (rank + 1) * per_shard]


def build_train_loader(rec_path, batch_size, transform, num_workers=2, seed=0, epoch=0,
                       shard=(0, 1), shuffle=True, last_batch="discard", start_batch=0):
    """A DataLoader of augmented training batches.

    Parameters
    ----------
    rec_path : str or dataset
        ``.rec`` file, or any dataset with ``.sample(i)`` (e.g. :class:`CityscapesFolder`).
    batch_size : int
    transform : callable
        ``(img, label, anchors, rng) -> (data, label)``, e.g. :class:`TrainTransform`.
    num_workers : int
        Worker processes (0 = in the calling process).
    seed, epoch : int
        Order and augmentation are a function of (seed, epoch): the same pair gives the same
        batches in the same order whatever ``num_workers`` is (exact resume).
    shard : (int, int)
        (rank, num_shards) of a distributed job; shards are disjoint and of equal size.
    shuffle : bool
    last_batch : {'discard', 'keep', 'rollover'}
    start_batch : int
        Skip the epoch's first batches without reading them (resuming mid-epoch).

    Returns
    -------
    mxnet.gluon.data.DataLoader
        Yields (data (N, 3, H, W) float32, label (N, H / cw, W / cw) float32) NDArrays.
    """
    from mxnet import gluon

    base = SegRecordDataset(rec_path) if isinstance(rec_path, str) else rec_path
    data = AugmentedDataset(base, transform, seed, epoch)
    indices = epoch_indices(len(base), seed, epoch, shard, shuffle)
    if len(indices) < batch_size and last_batch == "discard":
        raise ValueError("%s: %d items per shard, fewer than one batch of %d (last_batch="
                         "'discard' would give no batch)" % (rec_path, len(indices), batch_size))
    indices = indices[int(start_batch) * batch_size:]
    sampler = gluon.data.BatchSampler(_IndexSampler(indices), batch_size, last_batch)
    return gluon.data.DataLoader(data, batch_sampler=sampler, num_workers=num_workers)


def build_eval_dataset(rec_path):
    """The evaluation dataset of a ``.rec``: items (image uint8 RGB, label uint8), ``.meta(i)``."""
    return SegRecordDataset(rec_path)
