"""Label tables of the supported datasets: names, ids, trainIds and colours.

The converters map every dataset's raw annotation to *trainIds* once (``0 .. num_classes - 1``
for the evaluated classes, 255 for everything ignored), so the rest of the package only ever
sees trainIds. The Cityscapes table below is the official one (``cityscapesScripts``
``helpers/labels.py``); it is copied rather than imported so that the package does not need
cityscapesScripts at run time (the tests compare the two).
"""
import collections

import numpy as np

__all__ = [
    "IGNORE_LABEL",
    "Label",
    "LabelTable",
    "CITYSCAPES_LABELS",
    "DATASETS",
    "cityscapes_id_to_train_id",
    "cityscapes_train_id_to_id",
    "voc_colormap",
    "get_table",
    "colorize",
    "overlay",
]

IGNORE_LABEL = 255

#: One row of the official Cityscapes label table.
Label = collections.namedtuple("Label", ["name", "id", "train_id", "category", "color"])

# name, labelId, trainId, category, colour: the official table (cityscapesScripts 2.3.0).
# 'license plate' (id -1) never appears in a labelIds image and is left out.
CITYSCAPES_LABELS = [
    Label("unlabeled", 0, 255, "void", (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", (0, 0, 0)),
    Label("rectification border", 2, 255, "void", (0, 0, 0)),
    Label("out of roi", 3, 255, "void", (0, 0, 0)),
    Label("static", 4, 255, "void", (0, 0, 0)),
    Label("dynamic", 5, 255, "void", (111, 74, 0)),
    Label("ground", 6, 255, "void", (81, 0, 81)),
    Label("road", 7, 0, "flat", (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", (244, 35, 232)),
    Label("parking", 9, 255, "flat", (250, 170, 160)),
    Label("rail track", 10, 255, "flat", (230, 150, 140)),
    Label("building", 11, 2, "construction", (70, 70, 70)),
    Label("wall", 12, 3, "construction", (102, 102, 156)),
    Label("fence", 13, 4, "construction", (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", (180, 165, 180)),
    Label("bridge", 15, 255, "construction", (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", (150, 120, 90)),
    Label("pole", 17, 5, "object", (153, 153, 153)),
    Label("polegroup", 18, 255, "object", (153, 153, 153)),
    Label("traffic light", 19, 6, "object", (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", (107, 142, 35)),
    Label("terrain", 22, 9, "nature", (152, 251, 152)),
    Label("sky", 23, 10, "sky", (70, 130, 180)),
    Label("person", 24, 11, "human", (220, 20, 60)),
    Label("rider", 25, 12, "human", (255, 0, 0)),
    Label("car", 26, 13, "vehicle", (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", (0, 0, 110)),
    Label("train", 31, 16, "vehicle", (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", (119, 11, 32)),
]

#: Name -> labelId, for code that writes Cityscapes-format annotations (e.g. the generator).
CITYSCAPES_NAME_TO_ID = {lab.name: lab.id for lab in CITYSCAPES_LABELS}


class LabelTable(object):
    """The evaluated classes of one dataset.

    Parameters
    ----------
    name : str
        Dataset key in :data:`DATASETS`.
    names : list of str
        Evaluated class names; the index is the trainId.
    colors : list of (r, g, b)
        Display colour of each evaluated class.
    raw_to_train : numpy.ndarray or None
        uint8 lookup table of 256 entries from the raw annotation value to the trainId, or
        None when raw annotations are not single integers (KITTI road uses colours).
    valid_raw : numpy.ndarray or None
        Boolean table of 256 entries: which raw values the official table defines. Any other
        value in an annotation is an error, not an ignore.
    """

    ignore_label = IGNORE_LABEL

    def __init__(self, name, names, colors, raw_to_train=None, valid_raw=None):
        if len(names) != len(colors):
            raise ValueError("label table %r: %d names but %d colours"
                             % (name, len(names), len(colors)))
        self.name = name
        self.names = list(names)
        self.colors = [tuple(int(v) for v in c) for c in colors]
        self.raw_to_train = raw_to_train
        self.valid_raw = valid_raw
        palette = np.zeros((256, 3), np.uint8)  # everything else (255 included) is black
        palette[: len(self.colors)] = np.asarray(self.colors, np.uint8)
        self.palette = palette

    @property
    def num_classes(self):
        """Number of evaluated classes."""
        return len(self.names)

    def __repr__(self):
        return "LabelTable(%r, num_classes=%d)" % (self.name, self.num_classes)


def _cityscapes_tables():
    id_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    valid = np.zeros(256, bool)
    train_to_id = np.zeros(256, np.uint8)  # 255 (ignore) -> 0 'unlabeled'
    names, colors = [None] * 19, [None] * 19
    for lab in CITYSCAPES_LABELS:
        valid[lab.id] = True
        id_to_train[lab.id] = lab.train_id
        if lab.train_id != IGNORE_LABEL:
            train_to_id[lab.train_id] = lab.id
            names[lab.train_id] = lab.name
            colors[lab.train_id] = lab.color
    return id_to_train, valid, train_to_id, names, colors


(_CS_ID_TO_TRAIN, _CS_VALID_ID, _CS_TRAIN_TO_ID, _CS_NAMES, _CS_COLORS) = _cityscapes_tables()


def voc_colormap(n=256):
    """The PASCAL VOC palette (the ``bitget`` construction of the devkit's ``labelcolormap.m``).

    Returns
    -------
    numpy.ndarray
        (n, 3) uint8 RGB colours; entry 255 is the boundary colour (224, 224, 192).
    """
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]


def _voc_tables():
    to_train = np.full(256, IGNORE_LABEL, np.uint8)
    to_train[: len(VOC_NAMES)] = np.arange(len(VOC_NAMES))
    valid = np.zeros(256, bool)
    valid[: len(VOC_NAMES)] = True
    valid[IGNORE_LABEL] = True  # the 'boundary / difficult' band of SegmentationClass
    return to_train, valid


_VOC_TO_TRAIN, _VOC_VALID = _voc_tables()

#: KITTI road ground-truth colours (RGB) -> trainId; every other colour is ignored (255).
KITTI_ROAD_COLORS = {(255, 0, 255): 1, (255, 0, 0): 0}

DATASETS = {
    "cityscapes": LabelTable("cityscapes", _CS_NAMES, _CS_COLORS, _CS_ID_TO_TRAIN, _CS_VALID_ID),
    "voc": LabelTable("voc", VOC_NAMES, [tuple(c) for c in voc_colormap(len(VOC_NAMES))],
                      _VOC_TO_TRAIN, _VOC_VALID),
    "kitti_road": LabelTable("kitti_road", ["non-road", "road"], [(255, 0, 0), (255, 0, 255)]),
}


def get_table(dataset):
    """Return the :class:`LabelTable` of ``dataset`` (a key of :data:`DATASETS` or a table)."""
    if isinstance(dataset, LabelTable):
        return dataset
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError("unknown dataset %r; choose from %s" % (dataset, sorted(DATASETS)))


def cityscapes_id_to_train_id(array):
    """Map Cityscapes labelIds to the 19 trainIds (every other id -> 255).

    Parameters
    ----------
    array : array_like of int
        labelIds (0 .. 33). Values outside the official table also map to 255; converters use
        :func:`invalid_values` first to reject them.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        out = np.full(a.shape, IGNORE_LABEL, np.uint8)
        inside = (a >= 0) & (a < 256)
        out[inside] = _CS_ID_TO_TRAIN[a[inside].astype(np.intp)]
        return out
    return _CS_ID_TO_TRAIN[a]


def cityscapes_train_id_to_id(array):
    """Map trainIds back to Cityscapes labelIds (255 -> 0 'unlabeled'), for official results.

    Parameters
    ----------
    array : array_like of int
        trainIds (0 .. 18, 255).

    Returns
    -------
    numpy.ndarray
        uint8 labelIds of the same shape.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return _CS_TRAIN_TO_ID[a]


def invalid_values(raw, dataset):
    """Values of a raw annotation that the dataset's official table does not define.

    Parameters
    ----------
    raw : numpy.ndarray
        Raw annotation (labelIds for Cityscapes, class indices for VOC).
    dataset : str
        'cityscapes' or 'voc'.

    Returns
    -------
    list of int
        Sorted offending values (empty when the annotation is valid).
    """
    table = get_table(dataset)
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:  # the usual case; a histogram is ~10x faster than np.unique
        present = np.bincount(raw.reshape(-1), minlength=256) > 0
        return [int(v) for v in np.nonzero(present & ~table.valid_raw)[0]]
    values = np.unique(raw)
    inside = (values >= 0) & (values < 256)
    bad = [int(v) for v in values[~inside]]
    bad += [int(v) for v in values[inside] if not table.valid_raw[int(v)]]
    return sorted(bad)


def raw_to_train_id(raw, dataset):
    """Map a raw integer annotation of ``dataset`` ('cityscapes' or 'voc') to trainIds."""
    table = get_table(dataset)
    return table.raw_to_train[np.asarray(raw).astype(np.uint8)]


def kitti_road_color_to_train_id(rgb):
    """Map a KITTI road ground-truth image (RGB) to trainIds.

    Magenta (255, 0, 255) is road (1), red (255, 0, 0) is non-road (0), any other colour
    (black 'don't care' included) is ignored (255).
    """
    rgb = np.asarray(rgb)
    out = np.full(rgb.shape[:2], IGNORE_LABEL, np.uint8)
    for color, train_id in KITTI_ROAD_COLORS.items():
        out[np.all(rgb == np.asarray(color, rgb.dtype), axis=-1)] = train_id
    return out


def colorize(train_id_map, dataset="cityscapes"):
    """Colour a trainId map with the dataset's palette.

    Parameters
    ----------
    train_id_map : array_like of int
        (H, W) trainIds; 255 (and any value without a class) is drawn black.
    dataset : str or LabelTable
        'cityscapes', 'voc' or 'kitti_road'.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB.
    """
    table = get_table(dataset)
    a = np.asarray(train_id_map)
    if a.dtype != np.uint8:
        a = np.where((a >= 0) & (a < 256), a, IGNORE_LABEL).astype(np.uint8)
    return table.palette[a]


def overlay(rgb, train_id_map, dataset="cityscapes", alpha=0.5):
    """Blend the colourized ``train_id_map`` over an RGB image.

    Parameters
    ----------
    rgb : numpy.ndarray
        (H, W, 3) uint8 RGB image.
    train_id_map : array_like of int
        (H, W) trainIds of the same size; ignored pixels (255) keep the image as it is.
    dataset : str or LabelTable
        Palette to use.
    alpha : float
        Weight of the label colours (0 = image only, 1 = colours only).

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB.
    """
    rgb = np.asarray(rgb)
    ids = np.asarray(train_id_map)
    if rgb.shape[:2] != ids.shape[:2]:
        raise ValueError("overlay: image is %dx%d but the label map is %dx%d"
                         % (rgb.shape[0], rgb.shape[1], ids.shape[0], ids.shape[1]))
    color = colorize(ids, dataset).astype(np.float32)
    out = rgb.astype(np.float32)
    labelled = (ids != IGNORE_LABEL)[..., None]
    blended = (1.0 - alpha) * out + alpha * color
    out = np.where(labelled, blended, out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
