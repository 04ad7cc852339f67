"""Tiny dataset trees in the real layouts of Cityscapes, PASCAL VOC + SBD and KITTI road."""
import os

import cv2
import numpy as np

H, W = 64, 128


def write_png(path, array):
    """Write an RGB (H, W, 3) or single-channel array as PNG with OpenCV."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(path, array)


def random_image(rng, h=H, w=W):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def block_labels(rng, values, h=H, w=W, block=8):
    """A label map of 8x8 blocks drawn from ``values`` (every value appears when possible)."""
    gh, gw = -(-h // block), -(-w // block)
    cells = np.resize(np.asarray(values, np.uint8), gh * gw)
    rng.shuffle(cells)
    grid = cells.reshape(gh, gw)
    return np.kron(grid, np.ones((block, block), np.uint8))[:h, :w]


def make_cityscapes(root, rng, counts=None, coarse=False, test=0):
    """Cityscapes layout with random images and labelIds using every id 0..33.

    Returns ``{split: [(stem, rgb, label_ids)]}``.
    """
    counts = counts or {"train": 3, "val": 2}
    out = {}
    for split, n in counts.items():
        out[split] = []
        for i in range(n):
            city = ["aachen", "bochum"][i % 2]
            stem = "%s_%06d_%06d" % (city, i, 19)
            rgb = random_image(rng)
            ids = block_labels(rng, range(34))
            write_png(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"),
                      rgb)
            write_png(os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png"),
                      ids)
            if coarse:
                coarse_ids = block_labels(rng, [0, 7, 8, 11, 21, 23, 26], block=16)
                write_png(os.path.join(root, "gtCoarse", split, city,
                                       stem + "_gtCoarse_labelIds.png"), coarse_ids)
                out[split].append((stem, rgb, coarse_ids))
            else:
                out[split].append((stem, rgb, ids))
    if test:
        out["test"] = []
        for i in range(test):
            stem = "berlin_%06d_%06d" % (i, 19)
            rgb = random_image(rng)
            write_png(os.path.join(root, "leftImg8bit", "test", "berlin",
                                   stem + "_leftImg8bit.png"), rgb)
            out["test"].append((stem, rgb, None))
    return out


def voc_palette():
    from duc_hdc.data.labels import voc_colormap  # the devkit's bitget construction

    return voc_colormap(256)


def write_palette_png(path, indices):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().reshape(-1).tolist())
    im.save(path)


def write_sbd_mat(path, segmentation):
    """An SBD ``cls/*.mat``: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    import scipy.io

    os.makedirs(os.path.dirname(path), exist_ok=True)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = np.zeros(segmentation.shape, bool)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation.astype(np.uint8),
                                      "Boundaries": boundaries,
                                      "CategoriesPresent": present}})


def write_jpeg(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def with_exif_orientation(jpeg, orientation=6):
    """``jpeg`` bytes with an APP1 Exif segment holding only an Orientation tag (6: shown
    rotated 90 degrees clockwise, as phone cameras write it). Built by hand: OpenCV writes no
    Exif, and a TIFF header with one IFD entry is all a reader needs (big-endian)."""
    import struct

    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, 1 value, padded
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\0" * 4
    app1 = b"Exif\x00\x00" + tiff
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def make_voc(voc_root, sbd_root, rng):
    """VOC2012 + SBD trees.

    VOC lists: train = a, b; val = c, d. SBD lists: train = b, c, e; val = f, g (c is a VOC
    val image, so it must stay out of train_aug; b has both annotations, VOC's wins).
    Returns (images {name: rgb}, voc_labels {name: indices}, sbd_labels {name: indices}).
    """
    names = {"a": "2007_000032", "b": "2007_000039", "c": "2007_000063", "d": "2007_000068",
             "e": "2008_000002", "f": "2008_000003", "g": "2008_000007"}
    images, voc, sbd = {}, {}, {}
    for key, name in names.items():
        images[name] = random_image(rng)
        write_jpeg(os.path.join(voc_root, "JPEGImages", name + ".jpg"), images[name])
    for key in "abcd":
        name = names[key]
        voc[name] = block_labels(rng, list(range(21)) + [255])
        write_palette_png(os.path.join(voc_root, "SegmentationClass", name + ".png"), voc[name])
    for key in "bcefg":
        name = names[key]
        sbd[name] = block_labels(rng, range(21))
        write_sbd_mat(os.path.join(sbd_root, "cls", name + ".mat"), sbd[name])
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    os.makedirs(lists, exist_ok=True)
    for split, keys in (("train", "ab"), ("val", "cd"), ("trainval", "abcd")):
        with open(os.path.join(lists, split + ".txt"), "w") as f:
            f.write("".join(names[k] + "\n" for k in keys))
    for split, keys in (("train", "bce"), ("val", "fg")):
        with open(os.path.join(sbd_root, split + ".txt"), "w") as f:
            f.write("".join(names[k] + "\n" for k in keys))
    return names, images, voc, sbd


KITTI_COLORS = {"road": (255, 0, 255), "nonroad": (255, 0, 0), "black": (0, 0, 0),
                "other": (0, 255, 0)}


def make_kitti_road(root, rng, n=3):
    """data_road with um/umm/uu training images, road + lane gt, and 2 testing images.

    Returns {name: (rgb, expected trainIds)}.
    """
    out = {}
    cats = ["um", "umm", "uu"]
    for i in range(n):
        cat = cats[i % 3]
        name = "%s_%06d" % (cat, i)
        rgb = random_image(rng)
        kinds = block_labels(rng, range(4))
        colors = np.array([KITTI_COLORS[k] for k in ("road", "nonroad", "black", "other")],
                          np.uint8)
        gt = colors[kinds]
        expected = np.array([1, 0, 255, 255], np.uint8)[kinds]
        write_png(os.path.join(root, "training", "image_2", name + ".png"), rgb)
        write_png(os.path.join(root, "training", "gt_image_2", "%s_road_%06d.png" % (cat, i)), gt)
        if cat == "um":  # lane ground truth exists for um only; never used
            write_png(os.path.join(root, "training", "gt_image_2", "%s_lane_%06d.png" % (cat, i)),
                      np.zeros_like(gt))
        out[name] = (rgb, expected)
    for i in range(2):
        write_png(os.path.join(root, "testing", "image_2", "um_%06d.png" % i), random_image(rng))
    return out


def read_rec(prefix):
    from duc_hdc.data import SegRecordDataset

    ds = SegRecordDataset(prefix + ".rec")
    return ds, {ds.meta(i)["name"]: (ds[i][0], ds[i][1]) for i in range(len(ds))}
