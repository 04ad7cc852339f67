"""The dataset folders as users have them: VOCdevkit / benchmark_RELEASE roots, other
extensions, and wrong roots refused in one line naming what was expected."""
import os
import shutil

import numpy as np
import pytest

import data_fixtures as fx
from duc_hdc import cli
from duc_hdc.data import datasets


def _voc_as_downloaded(tmp_path, seed):
    """VOCdevkit/VOC2012 (the VOC tar) and benchmark_RELEASE/dataset (the SBD tgz)."""
    devkit, bench = str(tmp_path / "VOCdevkit"), str(tmp_path / "benchmark_RELEASE")
    tree = fx.make_voc(os.path.join(devkit, "VOC2012"), os.path.join(bench, "dataset"),
                       np.random.default_rng(seed))
    return devkit, bench, tree


def test_voc_roots_as_extracted_are_accepted(tmp_path):
    devkit, bench, (names, images, voc, sbd) = _voc_as_downloaded(tmp_path, 11)
    datasets.convert_voc(devkit, "train_aug", str(tmp_path / "aug"), sbd_root=bench,
                         progress=False)
    _, items = fx.read_rec(str(tmp_path / "aug"))
    assert sorted(items) == sorted(names[k] for k in "abefg")  # no VOC val image (c, d)
    for k in "ab":
        np.testing.assert_array_equal(items[names[k]][1], voc[names[k]])
    for k in "efg":
        np.testing.assert_array_equal(items[names[k]][1], sbd[names[k]])
    datasets.convert_voc(devkit, "val", str(tmp_path / "val"), progress=False)
    _, items = fx.read_rec(str(tmp_path / "val"))
    assert sorted(items) == sorted(names[k] for k in "cd")


def test_wrong_sbd_root_names_the_sbd_layout(tmp_path, capsys):
    devkit, bench, _ = _voc_as_downloaded(tmp_path, 12)
    wrong = str(tmp_path / "VOCdevkit")  # a folder, but not SBD's
    rc = cli.main(["data", "voc", "--root", devkit, "--sbd-root", wrong, "--split",
                   "train_aug", "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(lines) == 1, err
    line = lines[0]
    assert os.path.join(wrong, "train.txt") in line
    assert "benchmark_RELEASE/dataset" in line and "cls/*.mat" in line
    assert "PASCAL VOC 2012 layout" not in line  # the VOC root is fine: SBD's is wrong
    assert not os.path.exists(str(tmp_path / "x.rec"))


def test_voc_images_with_other_extensions(tmp_path):
    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, images, voc, _ = fx.make_voc(voc_root, sbd_root, np.random.default_rng(13))
    jpeg_dir = os.path.join(voc_root, "JPEGImages")
    os.remove(os.path.join(jpeg_dir, names["c"] + ".jpg"))
    fx.write_png(os.path.join(jpeg_dir, names["c"] + ".png"), images[names["c"]])
    os.rename(os.path.join(jpeg_dir, names["d"] + ".jpg"),
              os.path.join(jpeg_dir, names["d"] + ".JPG"))
    datasets.convert_voc(voc_root, "val", str(tmp_path / "val"), progress=False)
    _, items = fx.read_rec(str(tmp_path / "val"))
    assert sorted(items) == sorted(names[k] for k in "cd")
    np.testing.assert_array_equal(items[names["c"]][0], images[names["c"]])  # lossless PNG
    for k in "cd":
        np.testing.assert_array_equal(items[names[k]][1], voc[names[k]])


def test_kitti_upper_case_extension_is_not_dropped(tmp_path):
    root = str(tmp_path / "data_road")
    tree = fx.make_kitti_road(root, np.random.default_rng(14), n=3)
    img_dir = os.path.join(root, "training", "image_2")
    os.rename(os.path.join(img_dir, "uu_000002.png"), os.path.join(img_dir, "uu_000002.PNG"))
    with open(os.path.join(img_dir, ".DS_Store"), "wb") as f:
        f.write(b"\0\0\0\1Bud1")
    datasets.convert_kitti_road(root, "train", str(tmp_path / "train"), progress=False)
    _, items = fx.read_rec(str(tmp_path / "train"))
    assert sorted(items) == sorted(tree)
    for name, (rgb, expected) in tree.items():
        np.testing.assert_array_equal(items[name][1], expected)


def test_sbd_root_without_train_aug_is_refused(tmp_path, capsys):
    # --split train with --sbd-root would silently give VOC's 1,464 images, not the augmented set
    devkit, bench, _ = _voc_as_downloaded(tmp_path, 15)
    rc = cli.main(["data", "voc", "--root", devkit, "--sbd-root", bench, "--split", "train",
                   "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(lines) == 1, err
    assert "--sbd-root" in lines[0] and "train_aug" in lines[0] and "'train'" in lines[0]
    assert not os.path.exists(str(tmp_path / "x.rec"))


def _missing_label_folder(tmp_path, dataset):
    rng = np.random.default_rng(16)
    if dataset == "cityscapes":
        root = str(tmp_path / "cs")
        fx.make_cityscapes(root, rng)
        folder = os.path.join(root, "gtFine", "train")
        argv = ["--split", "train"]
    elif dataset == "kitti_road":
        root = str(tmp_path / "data_road")
        fx.make_kitti_road(root, rng)
        folder = os.path.join(root, "training", "gt_image_2")
        argv = ["--split", "train"]
    elif dataset == "voc":
        root = str(tmp_path / "VOC2012")
        fx.make_voc(root, str(tmp_path / "sbd"), rng)
        folder = os.path.join(root, "SegmentationClass")
        argv = ["--split", "val"]
    else:  # SBD without its cls/ folder
        root = str(tmp_path / "VOC2012")
        fx.make_voc(root, str(tmp_path / "sbd"), rng)
        folder = str(tmp_path / "sbd" / "cls")
        argv = ["--split", "train_aug", "--sbd-root", str(tmp_path / "sbd")]
        dataset = "voc"
    shutil.rmtree(folder)
    return folder, ["data", dataset, "--root", root] + argv



@pytest.mark.parametrize("dataset", ["cityscapes", "kitti_road", "voc", "sbd"])
@pytest.mark.parametrize("skip_bad", [False, True])
def test_missing_label_folder_is_named_once(tmp_path, capsys, dataset, skip_bad):
    # a download without its annotations: the folder is named, not its first file
    folder, argv = _missing_label_folder(tmp_path, dataset)
    argv += ["--out", str(tmp_path / "x"), "--no-progress"] + (["--skip-bad"] if skip_bad else [])
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: %s: " % folder), lines[0]
    assert "Expected" in lines[0] and "--skip-bad" not in lines[0]
    assert "WARNING" not in err  # not one warning per image first
    assert not os.path.exists(str(tmp_path / "x.rec"))


def test_every_file_bad_says_so_once(tmp_path, capsys):
    root = str(tmp_path / "data_road")
    fx.make_kitti_road(root, np.random.default_rng(17), n=2)
    gt = os.path.join(root, "training", "gt_image_2")
    for f in os.listdir(gt):
        os.remove(os.path.join(gt, f))  # the folder is there, every label missing
    rc = cli.main(["data", "kitti_road", "--root", root, "--split", "train", "--out",
                   str(tmp_path / "x"), "--no-progress", "--skip-bad"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(lines) == 1, err
    assert "every sample was bad" in lines[0] and "2 skipped" in lines[0]
    assert lines[0].count("nothing") == 1, lines[0]
