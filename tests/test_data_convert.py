"""Converters on tiny trees in the real layouts, read back exactly."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs

import data_fixtures as fx
from duc_hdc.data import SegRecordDataset, datasets
from duc_hdc.data.recordio import patch_anchors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def official_train_ids(label_ids):
    """labelIds -> trainIds through cityscapesScripts' own table (independent reference)."""
    lut = np.full(256, 255, np.uint8)
    for lab in cs.labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = 255 if lab.trainId in (-1, 255) else lab.trainId
    return lut[label_ids]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cityscapes"))
    tree = fx.make_cityscapes(root, np.random.default_rng(0), test=2)
    return root, tree


def test_cityscapes_train_read_back_exactly(cityscapes, tmp_path):
    root, tree = cityscapes
    prefix = str(tmp_path / "train")
    report = datasets.convert_cityscapes(root, "train", prefix, progress=False)
    assert report.written == 3 and report.skipped == []
    for ext in (".rec", ".idx", ".lst"):
        assert os.path.isfile(prefix + ext)
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".part")]
    ds, items = fx.read_rec(prefix)
    assert len(ds) == 3
    for stem, rgb, ids in tree["train"]:
        img, label = items[stem]
        assert img.dtype == np.uint8 and img.shape == (fx.H, fx.W, 3)
        np.testing.assert_array_equal(img, rgb)
        assert label.dtype == np.uint8 and label.shape == (fx.H, fx.W)
        np.testing.assert_array_equal(label, official_train_ids(ids))
        assert set(np.unique(label)) == set(range(19)) | {255}
    meta = ds.meta(0)
    assert meta["name"] == tree["train"][0][0]
    assert meta["image"] == "leftImg8bit/train/aachen/%s_leftImg8bit.png" % meta["name"]
    assert meta["label"].startswith("gtFine/train/aachen/")
    assert meta["height"] == fx.H and meta["width"] == fx.W
    # 7 anchors at row 512 and columns 256 * i of 1024x2048, scaled to 64x128
    assert meta["anchors"] == [[32, 16 * i] for i in range(1, 8)]
    assert patch_anchors(1024, 2048) == [[512, 256 * i] for i in range(1, 8)]
    lines = open(prefix + ".lst").read().splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[:2] == ["0", meta["name"]]
    # lossless by default: the record holds the source PNG bytes as they are
    src = os.path.join(root, meta["image"])
    rec_bytes = datasets.unpack_record(ds._record.read_idx(0))[2]
    assert rec_bytes == open(src, "rb").read()


def test_cityscapes_coarse_and_test_split(tmp_path):
    root = str(tmp_path / "cs")
    tree = fx.make_cityscapes(root, np.random.default_rng(1), counts={"train_extra": 2},
                              coarse=True, test=2)
    with pytest.raises(ValueError, match="--coarse"):
        datasets.convert_cityscapes(root, "train_extra", str(tmp_path / "x"), progress=False)
    datasets.convert_cityscapes(root, "train_extra", str(tmp_path / "extra"), coarse=True,
                                progress=False)
    _, items = fx.read_rec(str(tmp_path / "extra"))
    for stem, rgb, ids in tree["train_extra"]:
        np.testing.assert_array_equal(items[stem][1], official_train_ids(ids))
    datasets.convert_cityscapes(root, "test", str(tmp_path / "test"), progress=False)
    ds, items = fx.read_rec(str(tmp_path / "test"))
    assert len(ds) == 2
    for stem, rgb, _ in tree["test"]:
        img, label = items[stem]
        np.testing.assert_array_equal(img, rgb)
        assert label is None  # documented: test records have no label
    assert ds.meta(0)["label"] is None


def test_jpeg_encoding_is_smaller_and_close(cityscapes, tmp_path):
    root, tree = cityscapes
    datasets.convert_cityscapes(root, "val", str(tmp_path / "raw"), progress=False)
    datasets.convert_cityscapes(root, "val", str(tmp_path / "jpg"), encoding="jpg",
                                quality=90, progress=False)
    raw, raw_items = fx.read_rec(str(tmp_path / "raw"))
    jpg, jpg_items = fx.read_rec(str(tmp_path / "jpg"))
    for stem, rgb, ids in tree["val"]:
        np.testing.assert_array_equal(jpg_items[stem][1], official_train_ids(ids))  # lossless
        assert not np.array_equal(jpg_items[stem][0], rgb)  # lossy image
        assert jpg_items[stem][0].shape == rgb.shape
    # random-noise images: JPEG q90 is still smaller than PNG
    assert os.path.getsize(str(tmp_path / "jpg.rec")) < os.path.getsize(str(tmp_path / "raw.rec"))


def test_cityscapes_folder_dataset_matches_rec(cityscapes, tmp_path):
    root, tree = cityscapes
    folder = datasets.CityscapesFolder(root, "val")
    datasets.convert_cityscapes(root, "val", str(tmp_path / "val"), progress=False)
    rec = SegRecordDataset(str(tmp_path / "val.rec"))
    assert len(folder) == len(rec) == 2
    for i in range(2):
        np.testing.assert_array_equal(folder[i][0], rec[i][0])
        np.testing.assert_array_equal(folder[i][1], rec[i][1])
        assert folder.meta(i)["anchors"] == rec.meta(i)["anchors"]
        assert folder.meta(i)["name"] == rec.meta(i)["name"]


def test_voc_val_and_train_aug(tmp_path):
    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(2))
    datasets.convert_voc(voc_root, "val", str(tmp_path / "val"), progress=False)
    _, items = fx.read_rec(str(tmp_path / "val"))
    assert sorted(items) == sorted([names["c"], names["d"]])
    for name, (img, label) in items.items():
        np.testing.assert_array_equal(label, voc[name])  # indices as they are, 255 kept
        jpeg = cv2.cvtColor(cv2.imread(os.path.join(voc_root, "JPEGImages", name + ".jpg")),
                            cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, jpeg)  # the JPEG bytes as they are
    datasets.convert_voc(voc_root, "train_aug", str(tmp_path / "aug"), sbd_root=sbd_root,
                         progress=False)
    _, items = fx.read_rec(str(tmp_path / "aug"))
    # VOC train (a, b) + SBD train/val (b, c, e, f, g) - VOC val (c, d)
    assert sorted(items) == sorted(names[k] for k in "abefg")
    np.testing.assert_array_equal(items[names["a"]][1], voc[names["a"]])
    np.testing.assert_array_equal(items[names["b"]][1], voc[names["b"]])  # VOC's wins
    for k in "efg":
        np.testing.assert_array_equal(items[names[k]][1], sbd[names[k]])  # from the .mat
    with pytest.raises(ValueError, match="sbd"):
        datasets.voc_samples(voc_root, "train_aug")
    folder = datasets.VOCFolder(voc_root, "train_aug", sbd_root=sbd_root)
    assert len(folder) == 5


def test_voc_train_aug_from_segmentation_class_aug(tmp_path, capsys):
    """The augmented set as most copies of it come: SBD's labels already converted to grey
    PNGs in ``VOC2012/SegmentationClassAug`` (val images included), no SBD folder. train_aug
    without --sbd-root reads them: the same images and labels as through SBD's .mat files
    (VOC train + SBD, minus VOC val; VOC's own label where it has one)."""
    from duc_hdc import cli

    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(6))
    aug = os.path.join(voc_root, "SegmentationClassAug")
    os.makedirs(aug)
    for name in names.values():  # the SBD label, else VOC's (as the converted set has it)
        label = sbd.get(name, voc.get(name))
        if label is not None:
            fx.write_png(os.path.join(aug, name + ".png"), np.where(label == 255, 255, label))
    datasets.convert_voc(voc_root, "train_aug", str(tmp_path / "sbd_way"), sbd_root=sbd_root,
                         progress=False)
    rc = cli.main(["data", "voc", "--root", voc_root, "--split", "train_aug", "--out",
                   str(tmp_path / "aug_way"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    _, want = fx.read_rec(str(tmp_path / "sbd_way"))
    _, got = fx.read_rec(str(tmp_path / "aug_way"))
    assert sorted(got) == sorted(want) == sorted(names[k] for k in "abefg")
    for name in want:
        np.testing.assert_array_equal(got[name][0], want[name][0])
        np.testing.assert_array_equal(got[name][1], want[name][1])
    np.testing.assert_array_equal(got[names["b"]][1], voc[names["b"]])  # VOC's own wins
    # neither SBD nor SegmentationClassAug: one line naming both
    os.rename(aug, aug + "_gone")
    rc = cli.main(["data", "voc", "--root", voc_root, "--split", "train_aug", "--out",
                   str(tmp_path / "none"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--sbd-root" in err and "SegmentationClassAug" in err, err


def test_voc_colour_coded_png_is_mapped_back(tmp_path):
    # a SegmentationClass saved as RGB (e.g. re-saved by an image editor) reads the same
    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(3))
    name = names["c"]
    fx.write_png(os.path.join(voc_root, "SegmentationClass", name + ".png"),
                 fx.voc_palette()[voc[name]])
    ds = datasets.VOCFolder(voc_root, "val")
    np.testing.assert_array_equal(ds[0][1], voc[name])


def test_voc_palette_png_with_its_palette_reordered_reads_by_colour(tmp_path):
    """An image editor that re-saves a SegmentationClass PNG may reorder its palette (e.g. by
    first use): the colours stay right, the indices do not. The indices were read as the
    classes; now a palette that is not VOC's for the indices used is read by its colours
    (as the RGB re-save is), and a colour outside VOC's palette is named."""
    from PIL import Image

    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(5))
    name = names["c"]
    classes = voc[name]
    used = np.unique(classes)
    assert len(used) > 3
    order = np.random.default_rng(0).permutation(256)  # new index -> VOC index
    assert (order[: len(used)] != np.arange(len(used))).any()
    new_of = np.argsort(order)  # VOC index -> new index
    path = os.path.join(voc_root, "SegmentationClass", name + ".png")
    im = Image.fromarray(new_of[classes].astype(np.uint8), mode="P")
    im.putpalette(fx.voc_palette()[order].reshape(-1).tolist())
    im.save(path)
    # the file shows the same colours as VOC's (independent reference: PIL's RGB conversion)
    with Image.open(path) as check:
        np.testing.assert_array_equal(np.array(check.convert("RGB")),
                                      fx.voc_palette()[classes])
    ds = datasets.VOCFolder(voc_root, "val")
    np.testing.assert_array_equal(ds[0][1], classes)
    # a colour no VOC class has: named, not read as some class
    palette = fx.voc_palette()[order].copy()
    palette[new_of[classes[0, 0]]] = (1, 2, 3)
    im.putpalette(palette.reshape(-1).tolist())
    im.save(path)
    with pytest.raises(Exception, match=r"outside the VOC palette: \(1, 2, 3\)"):
        datasets.VOCFolder(voc_root, "val")[0]
    # VOC's palette cut after its 21 classes, the boundary index 255 past it: read as it is
    assert (classes == 255).any()
    im = Image.fromarray(classes.astype(np.uint8), mode="P")
    im.putpalette(fx.voc_palette()[:21].reshape(-1).tolist())
    im.save(path)
    with Image.open(path) as check:
        assert len(check.getpalette()) < 768
    np.testing.assert_array_equal(datasets.VOCFolder(voc_root, "val")[0][1], classes)


def test_exif_rotated_jpeg_is_read_on_the_pixel_grid_its_label_is_drawn_on(tmp_path):
    """A JPEG whose Exif says "rotate" (phone photos) is stored unrotated, and its label PNG
    (which has no orientation) is drawn on those stored pixels. OpenCV's decoder applied the
    rotation: the non-square image was refused (its size no longer matched the label's) and
    a square one was converted and trained on turned a quarter against its label. Datasets
    now read the pixels as stored (as PIL and torchvision do by default); predict still turns
    a photo upright, as an image viewer shows it."""
    from duc_hdc.inference.io import read_image

    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(4))
    (h, w) = voc[names["c"]].shape
    assert h != w
    for key in "cd":
        path = os.path.join(voc_root, "JPEGImages", names[key] + ".jpg")
        with open(path, "rb") as f:
            data = fx.with_exif_orientation(f.read())
        with open(path, "wb") as f:
            f.write(data)
        # the reference: OpenCV told to ignore the orientation; and it does rotate otherwise
        stored = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR
                                           | cv2.IMREAD_IGNORE_ORIENTATION), cv2.COLOR_BGR2RGB)
        assert stored.shape[:2] == (h, w)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (w, h)
        images[names[key]] = stored
    datasets.convert_voc(voc_root, "val", str(tmp_path / "val"), progress=False)
    _, items = fx.read_rec(str(tmp_path / "val"))
    assert sorted(items) == sorted([names["c"], names["d"]])
    for name, (img, label) in items.items():
        np.testing.assert_array_equal(label, voc[name])
        np.testing.assert_array_equal(img, images[name])  # not turned
    folder = datasets.VOCFolder(voc_root, "val")
    np.testing.assert_array_equal(folder[0][0], images[names["c"]])
    # predict: upright, as a viewer shows it (orientation 6 = turned 90 degrees clockwise)
    upright = read_image(os.path.join(voc_root, "JPEGImages", names["c"] + ".jpg"))
    np.testing.assert_array_equal(upright, cv2.rotate(images[names["c"]],
                                                      cv2.ROTATE_90_CLOCKWISE))


def test_kitti_road(tmp_path):
    root = str(tmp_path / "data_road")
    tree = fx.make_kitti_road(root, np.random.default_rng(4))
    datasets.convert_kitti_road(root, "train", str(tmp_path / "train"), progress=False)
    ds, items = fx.read_rec(str(tmp_path / "train"))
    assert sorted(items) == sorted(tree)  # lane files are not samples
    for name, (rgb, expected) in tree.items():
        np.testing.assert_array_equal(items[name][0], rgb)
        np.testing.assert_array_equal(items[name][1], expected)
    datasets.convert_kitti_road(root, "test", str(tmp_path / "test"), progress=False)
    ds, items = fx.read_rec(str(tmp_path / "test"))
    assert len(ds) == 2 and all(lab is None for _, lab in items.values())
    folder = datasets.KittiRoadFolder(root, "train")
    np.testing.assert_array_equal(folder[0][1], tree[folder.meta(0)["name"]][1])


def _run_tool(*args):
    return subprocess.run([sys.executable] + list(args), cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_tools_help_and_summary(cityscapes, tmp_path):
    for tool in ("cityscapes_to_rec", "voc_to_rec", "kitti_road_to_rec",
                 "make_synthetic_cityscapes"):
        res = _run_tool("tools/%s.py" % tool, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout and "--out" in res.stdout
    root, _ = cityscapes
    prefix = str(tmp_path / "cli")
    res = _run_tool("tools/cityscapes_to_rec.py", "--root", root, "--split", "val", "--out",
                    prefix, "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "wrote 2 records to %s.rec" % prefix in res.stdout
    assert "2/2" in res.stderr and "img/s" in res.stderr  # the tqdm bar
    assert len(SegRecordDataset(prefix + ".rec")) == 2
