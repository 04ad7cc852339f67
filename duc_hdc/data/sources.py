"""The raw dataset layouts: file reading and the sample lists of Cityscapes, VOC (+SBD), KITTI road.

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

import numpy as np

from . import labels as _labels
from .recordio import (BadSampleError, EmptySplitError, check_encoded, decode_image, decode_label,
                       patch_anchors)

logger = logging.getLogger(__name__)

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
            palette = im.getpalette() if mode == "P" else None
    except Exception as err:  # PIL raises many types for damaged files
        raise BadSampleError(path, "corrupt or truncated label (%s)" % err)
    if palette is not None and not _is_voc_palette(palette, raw):
        # re-saved with another palette order (image editors reorder by use): the colours
        # are the classes, the indices are not
        entries = np.asarray(palette[:768], np.uint8).reshape(-1, 3)
        if raw.max() >= len(entries):
            raise BadSampleError(path, "palette index %d has no colour (the palette has %d, "
                                 "not VOC's order)" % (raw.max(), len(entries)))
        raw = _voc_colors_to_index(entries[raw], path)
    if mode not in ("P", "L"):
        if mode in ("RGB", "RGBA"):  # colour-coded: map the VOC palette back to indices
            raw = _voc_colors_to_index(raw[..., :3], path)
        else:
            raise BadSampleError(path, "VOC label must be a palette or grey PNG, got mode %s"
                                 % mode)
    _check_values(raw, "voc", path)
    return _labels.raw_to_train_id(raw, "voc")


def _is_voc_palette(palette, indices):
    """Whether a palette PNG's ``palette`` (PIL's flat RGB list) gives every index used in
    ``indices`` VOC's colour for it, as the devkit's PNGs do."""
    used = np.unique(indices)
    entries = np.asarray(palette[:768], np.uint8).reshape(-1, 3)
    used = used[used < len(entries)]  # a short palette: the indices past it have no colour
    return bool((entries[used] == _labels.voc_colormap(256)[used]).all())


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
        raise ValueError("split 'train_extra' has only coarse labels (gtCoarse/): `duc-hdc "
                         "data cityscapes --split train_extra --coarse` converts them; "
                         "evaluate on a fine split (val)")
    img_dir = os.path.join(root, "leftImg8bit", split)
    pattern = os.path.join(img_dir, "*", "*_leftImg8bit.png")
    # .png in any case (a copy may upper-case it), as KITTI's
    images = sorted(p for p in glob.glob(os.path.join(img_dir, "*", "*"))
                    if p.lower().endswith("_leftimg8bit.png")
                    and not os.path.basename(p).startswith("."))
    if not images:
        raise EmptySplitError(img_dir, "empty split: no image matches %s" % pattern)
    gt = "gtCoarse" if coarse else "gtFine"
    if split != "test":
        _require_folder(os.path.join(root, gt, split), "%s label" % gt)
    out = []
    for path in images:
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len("_leftImg8bit.png")]
        if split == "test":
            out.append(Sample(stem, path, None, None, root))
        else:
            label = os.path.join(root, gt, split, city, "%s_%s_labelIds.png" % (stem, gt))
            out.append(Sample(stem, path, label, "cityscapes", root))
    _warn_left_out(_files_under(img_dir), images, "image file(s) of %s" % img_dir)
    if split != "test":
        labels = [p for p in _files_under(os.path.join(root, gt, split))
                  if p.endswith("_%s_labelIds.png" % gt)]
        _warn_left_out(labels, [s.label_path for s in out], "%s label(s) without an image" % gt)
    return out


def _files_under(folder):
    """Every file below ``folder`` but hidden ones (.DS_Store, ._*)."""
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
            if not f.startswith(".")]


def _warn_left_out(found, used, what):
    """Log the files a listing found but the layout's naming leaves out (a typo, a nested
    folder, another extension), which would otherwise only show as a lower count."""
    rest = sorted(set(found) - set(used))
    if rest:
        logger.warning("%d %s left out (not named as the layout names them), e.g. %s",
                       len(rest), what, ", ".join(rest[:3]))


def _require_folder(path, what):
    """A whole annotation folder missing is a layout error (named once), not N bad samples."""
    if not os.path.isdir(path):
        raise EmptySplitError(path, "no %s folder (%s)" % (
            what, "not a folder" if os.path.exists(path) else "it does not exist"))


def _read_list(path, what="split list"):
    if not os.path.isfile(path):
        raise EmptySplitError(path, "%s not found" % what)
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


#: Extensions tried, in order, for an image listed by name (VOC's own is .jpg).
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def _find_image(folder, name):
    """``folder/name.jpg``, or the name with another image extension that exists there."""
    for ext in _IMAGE_EXTS:
        path = os.path.join(folder, name + ext)
        if os.path.isfile(path):
            return path
    return os.path.join(folder, name + ".jpg")  # missing: the error names the expected file


def _inner_root(root, inner, marker):
    """``root``, or ``root/inner`` when ``root`` is the archive's top folder (``VOCdevkit``,
    ``benchmark_RELEASE``): the one holding ``marker``."""
    if not os.path.exists(os.path.join(root, marker)) and \
            os.path.exists(os.path.join(root, inner, marker)):
        return os.path.join(root, inner)
    return root


def voc_samples(voc_root, split, sbd_root=None):
    """List a PASCAL VOC 2012 split, or ``train_aug`` with the SBD annotations.

    Parameters
    ----------
    voc_root : str
        ``VOCdevkit/VOC2012`` (JPEGImages, SegmentationClass, ImageSets/Segmentation), or
        ``VOCdevkit`` holding it. Images are ``<name>.jpg``, else .jpeg / .png (any case).
    split : str
        'train', 'val', 'trainval' (VOC lists), or 'train_aug': VOC train + SBD train + SBD
        val, minus every VOC val image (10,582 images with the full data sets).
    sbd_root : str
        SBD ``benchmark_RELEASE/dataset`` (img, cls, train.txt, val.txt), or
        ``benchmark_RELEASE`` holding it. train_aug without it reads SBD's labels from
        ``VOC2012/SegmentationClassAug`` (PNGs), and needs that folder.

    Returns
    -------
    list of Sample
        VOC's own annotation (with its boundary band) is used when it exists, SBD's otherwise.
    """
    if split not in VOC_SPLITS:
        raise ValueError("unknown VOC split %r; choose from %s" % (split, ", ".join(VOC_SPLITS)))
    voc_root = _inner_root(voc_root, "VOC2012", "ImageSets")
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    jpeg = lambda n: _find_image(os.path.join(voc_root, "JPEGImages"), n)
    png = lambda n: os.path.join(voc_root, "SegmentationClass", n + ".png")
    if split != "train_aug":
        names = _read_list(os.path.join(lists, split + ".txt"))
        if not names:
            raise EmptySplitError(os.path.join(lists, split + ".txt"), "empty split list")
        _require_folder(os.path.join(voc_root, "SegmentationClass"), "VOC label")
        return [Sample(n, jpeg(n), png(n), "voc_png", voc_root) for n in names]
    voc_train = _read_list(os.path.join(lists, "train.txt"))
    voc_val = set(_read_list(os.path.join(lists, "val.txt")))
    if sbd_root is None:
        return _voc_aug_samples(voc_root, voc_train, voc_val, jpeg, png)
    sbd_root = _inner_root(sbd_root, "dataset", "train.txt")
    sbd = _read_list(os.path.join(sbd_root, "train.txt"), "SBD split list") + \
        _read_list(os.path.join(sbd_root, "val.txt"), "SBD split list")
    out = []
    for n, voc_own in _train_aug(voc_train, voc_val, sbd, sbd_root, png):
        img = jpeg(n)
        if not os.path.isfile(img):
            sbd_img = _find_image(os.path.join(sbd_root, "img"), n)
            img = sbd_img if os.path.isfile(sbd_img) else img
        if voc_own:
            out.append(Sample(n, img, png(n), "voc_png", voc_root))
        else:
            out.append(Sample(n, img, os.path.join(sbd_root, "cls", n + ".mat"), "sbd_mat",
                              voc_root))
    for kind, folder, what in (("voc_png", os.path.join(voc_root, "SegmentationClass"),
                                "VOC label"), ("sbd_mat", os.path.join(sbd_root, "cls"),
                                               "SBD label (cls/*.mat)")):
        if any(s.label_kind == kind for s in out):
            _require_folder(folder, what)
    return out


def _train_aug(voc_train, voc_val, extra, where, png):
    """train_aug's names, each with whether VOC's own label is used: VOC train and ``extra``
    (the images SBD labels), minus every VOC val image; VOC's label (with its boundary band)
    for VOC train and wherever ``png(name)`` exists, SBD's elsewhere."""
    names = [n for n in sorted(set(voc_train) | set(extra)) if n not in voc_val]
    if not names:
        raise EmptySplitError(where, "empty split: train_aug has no image")
    voc_labelled = set(voc_train)
    return [(n, n in voc_labelled or os.path.isfile(png(n))) for n in names]


def _voc_aug_samples(voc_root, voc_train, voc_val, jpeg, png):
    """train_aug from ``VOC2012/SegmentationClassAug``: SBD's labels already converted to
    single-channel PNGs (class indices, 255 ignored), as most copies of the augmented set come
    (val images included). Every image with such a label, minus VOC val; VOC's own label where
    it has one (:func:`_train_aug`, as with ``--sbd-root``)."""
    aug = os.path.join(voc_root, "SegmentationClassAug")
    if not os.path.isdir(aug):
        raise ValueError("split 'train_aug' needs SBD's labels: the SBD dataset folder "
                         "(--sbd-root) or %s (SBD's labels as PNGs)" % aug)
    labelled = [os.path.splitext(f)[0] for f in os.listdir(aug) if f.lower().endswith(".png")]
    out = []
    for n, voc_own in _train_aug(voc_train, voc_val, labelled, aug, png):
        label = png(n) if voc_own else os.path.join(aug, n + ".png")
        out.append(Sample(n, jpeg(n), label, "voc_png", voc_root))
    if any(os.path.dirname(s.label_path) != aug for s in out):
        _require_folder(os.path.join(voc_root, "SegmentationClass"), "VOC label")
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
    # .png in any case (a copy may upper-case it); hidden files (.DS_Store, ._*) are not images
    images = sorted(os.path.join(img_dir, f) for f in
                    (os.listdir(img_dir) if os.path.isdir(img_dir) else [])
                    if f.lower().endswith(".png") and not f.startswith("."))
    if not images:
        raise EmptySplitError(img_dir, "empty split: no *.png image")
    if split == "train":
        _require_folder(os.path.join(root, "training", "gt_image_2"), "KITTI road label")
    out = []
    for path in images:
        name = os.path.splitext(os.path.basename(path))[0]  # e.g. um_000000
        if split == "test":
            out.append(Sample(name, path, None, None, root))
            continue
        cat, _, num = name.partition("_")
        label = os.path.join(root, "training", "gt_image_2", "%s_road_%s.png" % (cat, num))
        out.append(Sample(name, path, label, "kitti_road", root))
    _warn_left_out(_files_under(img_dir), images, "file(s) of %s (KITTI's images are .png)"
                   % img_dir)
    if split == "train":
        gt_dir = os.path.join(root, "training", "gt_image_2")
        roads = [p for p in _files_under(gt_dir) if "_road_" in os.path.basename(p)]
        _warn_left_out(roads, [s.label_path for s in out], "road label(s) without an image")
    return out
