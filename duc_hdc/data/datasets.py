"""Datasets over indexed RecordIO files and over the raw dataset folders.

Every dataset here yields ``(image (H, W, 3) uint8 RGB, label (H, W) uint8 trainIds)`` and has
``.meta(i)`` (a dict with at least ``name`` and ``anchors``) and ``.sample(i)`` (image, label,
meta), so the training pipeline runs the same over a ``.rec`` file or a folder. The layouts are
read by :mod:`duc_hdc.data.sources`, converted by :mod:`duc_hdc.data.convert` (both re-exported
here), and loaded for training by :mod:`duc_hdc.data.loader`.
"""
import os

from .convert import convert_cityscapes, convert_kitti_road, convert_samples, convert_voc
from .recordio import RecordFileError, decode_image, decode_label, open_indexed, unpack_record
from .sources import (CITYSCAPES_SPLITS, KITTI_ROAD_SPLITS, LABEL_LOADERS, VOC_SPLITS, Sample,
                      _sample_meta, cityscapes_samples, kitti_road_samples, load_sample,
                      read_image_file, voc_samples)

__all__ = [
    "Sample", "SegRecordDataset", "CityscapesFolder", "VOCFolder", "KittiRoadFolder",
    "build_eval_dataset", "cityscapes_samples", "voc_samples", "kitti_road_samples",
    "convert_samples", "convert_cityscapes", "convert_voc", "convert_kitti_road",
    "CITYSCAPES_SPLITS", "VOC_SPLITS", "KITTI_ROAD_SPLITS", "LABEL_LOADERS", "read_image_file",
]


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

    def __init__(self, samples, path=None):
        self.samples = list(samples)
        #: how messages name the data: the folder and split (not the class's name)
        self.path = path or "the dataset folder"

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
        super(CityscapesFolder, self).__init__(cityscapes_samples(root, split, coarse),
                                               "%s (split %s)" % (root, split))


class VOCFolder(_FolderDataset):
    """A PASCAL VOC 2012 split (``train_aug`` needs ``sbd_root``) read from the folders."""

    def __init__(self, voc_root, split, sbd_root=None):
        super(VOCFolder, self).__init__(voc_samples(voc_root, split, sbd_root),
                                        "%s (split %s)" % (voc_root, split))


class KittiRoadFolder(_FolderDataset):
    """KITTI road read from ``data_road`` (road = 1, non-road = 0, other colours = 255)."""

    def __init__(self, root, split):
        super(KittiRoadFolder, self).__init__(kitti_road_samples(root, split),
                                              "%s (split %s)" % (root, split))



def build_eval_dataset(rec_path):
    """The evaluation dataset of a ``.rec`` file (items: image, label)."""
    return SegRecordDataset(rec_path)
