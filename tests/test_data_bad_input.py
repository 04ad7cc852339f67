"""Every bad input the converters and readers promise to reject, with the file named."""
import os
import shutil

import numpy as np
import pytest

import data_fixtures as fx
from duc_hdc.data import SegRecordDataset, datasets
from duc_hdc.data import convert as data_convert
from duc_hdc.data.recordio import BadSampleError, RecordFileError


def _tree(tmp_path, n=3):
    root = str(tmp_path / "cs")
    tree = fx.make_cityscapes(root, np.random.default_rng(7), counts={"train": n})
    paths = []
    for stem, _, _ in tree["train"]:
        city = stem.split("_")[0]
        paths.append((os.path.join(root, "leftImg8bit", "train", city, stem + "_leftImg8bit.png"),
                      os.path.join(root, "gtFine", "train", city, stem + "_gtFine_labelIds.png")))
    return root, tree, paths


def _truncate(path, keep=0.6):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image" * 10)


def _strip_iend(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-12])  # complete image data, only the IEND chunk missing


def _check_stops_then_skips(root, tmp_path, bad_path, match):
    """Default: stop naming the file, nothing written; --skip-bad: the rest written, listed."""
    prefix = str(tmp_path / "out")
    with pytest.raises(BadSampleError, match=match) as err:
        datasets.convert_cityscapes(root, "train", prefix, progress=False)
    assert bad_path in str(err.value)
    assert os.listdir(str(tmp_path)) == ["cs"]  # no .rec, no .part left behind
    report = datasets.convert_cityscapes(root, "train", prefix, skip_bad=True, progress=False)
    assert report.written == 2
    assert len(report.skipped) == 1 and report.skipped[0][0] == bad_path
    assert len(SegRecordDataset(prefix + ".rec")) == 2


@pytest.mark.parametrize("damage", [_truncate, _garbage, _strip_iend])
@pytest.mark.parametrize("which", [0, 1])  # image, label
def test_corrupt_or_truncated_file(tmp_path, damage, which):
    root, _, paths = _tree(tmp_path)
    bad = paths[1][which]
    damage(bad)
    _check_stops_then_skips(root, tmp_path, bad, "corrupt|truncated")


def test_image_and_label_of_different_sizes(tmp_path):
    root, _, paths = _tree(tmp_path)
    fx.write_png(paths[2][1], np.zeros((32, 64), np.uint8))
    _check_stops_then_skips(root, tmp_path, paths[2][1], "32x64 but its image .* is 64x128")


def test_image_without_label(tmp_path):
    root, _, paths = _tree(tmp_path)
    os.remove(paths[0][1])
    _check_stops_then_skips(root, tmp_path, paths[0][0], "no label: .*gtFine_labelIds.png")


def test_label_values_outside_the_table(tmp_path):
    root, _, paths = _tree(tmp_path)
    ids = np.full((fx.H, fx.W), 7, np.uint8)
    ids[0, :3] = [34, 99, 200]
    fx.write_png(paths[1][1], ids)
    _check_stops_then_skips(root, tmp_path, paths[1][1],
                            "outside the cityscapes table: 34, 99, 200")


def test_colour_label_is_rejected(tmp_path):
    root, _, paths = _tree(tmp_path)
    fx.write_png(paths[1][1], np.zeros((fx.H, fx.W, 3), np.uint8))
    _check_stops_then_skips(root, tmp_path, paths[1][1], "single-channel")


def test_voc_and_sbd_bad_labels(tmp_path):
    voc_root, sbd_root = str(tmp_path / "VOC2012"), str(tmp_path / "sbd")
    names, _, voc, sbd = fx.make_voc(voc_root, sbd_root, np.random.default_rng(8))
    bad = voc[names["c"]].copy()
    bad[0, 0] = 30
    fx.write_palette_png(os.path.join(voc_root, "SegmentationClass", names["c"] + ".png"), bad)
    with pytest.raises(BadSampleError, match=r"%s\.png: label values outside the voc table: 30"
                       % names["c"]):
        datasets.convert_voc(voc_root, "val", str(tmp_path / "val"), progress=False)
    mat = os.path.join(sbd_root, "cls", names["e"] + ".mat")
    _truncate(mat, 0.5)
    with pytest.raises(BadSampleError, match=r"%s\.mat: corrupt" % names["e"]):
        datasets.convert_voc(voc_root, "train_aug", str(tmp_path / "aug"), sbd_root=sbd_root,
                             progress=False)
    seg = sbd[names["f"]].copy()
    seg[3, 3] = 40
    fx.write_sbd_mat(os.path.join(sbd_root, "cls", names["f"] + ".mat"), seg)
    report = datasets.convert_voc(voc_root, "train_aug", str(tmp_path / "aug"),
                                  sbd_root=sbd_root, skip_bad=True, progress=False)
    assert report.written == 3
    assert sorted(os.path.basename(p) for p, _ in report.skipped) == \
        sorted([names["e"] + ".mat", names["f"] + ".mat"])
    assert any("outside the VOC table: 40" in reason for _, reason in report.skipped)


def test_empty_split(tmp_path):
    root = str(tmp_path / "cs")
    os.makedirs(os.path.join(root, "leftImg8bit", "val", "aachen"))
    with pytest.raises(BadSampleError, match="leftImg8bit/val: empty split"):
        datasets.convert_cityscapes(root, "val", str(tmp_path / "val"), progress=False)
    with pytest.raises(BadSampleError, match="image_2: empty split"):
        datasets.convert_kitti_road(str(tmp_path / "none"), "train", str(tmp_path / "k"),
                                    progress=False)
    voc = str(tmp_path / "voc")
    os.makedirs(os.path.join(voc, "ImageSets", "Segmentation"))
    open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), "w").close()
    with pytest.raises(BadSampleError, match="val.txt: empty split"):
        datasets.convert_voc(voc, "val", str(tmp_path / "v"), progress=False)


def test_every_sample_bad_writes_nothing(tmp_path):
    root, _, paths = _tree(tmp_path, n=1)
    _garbage(paths[0][0])
    with pytest.raises(BadSampleError, match="every sample was bad"):
        datasets.convert_cityscapes(root, "train", str(tmp_path / "out"), skip_bad=True,
                                    progress=False)
    assert os.listdir(str(tmp_path)) == ["cs"]


def test_interrupted_conversion_leaves_no_partial_rec(tmp_path, monkeypatch):
    root, _, paths = _tree(tmp_path)
    prefix = str(tmp_path / "out")
    datasets.convert_cityscapes(root, "train", prefix, progress=False)
    before = open(prefix + ".rec", "rb").read()
    calls = []
    real = data_convert._convert_one

    def interrupted(args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(data_convert, "_convert_one", interrupted)
    fx.write_png(paths[0][0], np.zeros((fx.H, fx.W, 3), np.uint8))  # would change the output
    with pytest.raises(KeyboardInterrupt):
        datasets.convert_cityscapes(root, "train", prefix, progress=False)
    assert sorted(os.listdir(str(tmp_path))) == ["cs", "out.idx", "out.lst", "out.rec"]
    assert open(prefix + ".rec", "rb").read() == before  # the previous output is intact
    monkeypatch.undo()
    os.remove(prefix + ".rec")
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(data_convert, "_convert_one", interrupted)
        calls.clear()
        datasets.convert_cityscapes(root, "train", str(tmp_path / "fresh"), progress=False)
    assert not [f for f in os.listdir(str(tmp_path)) if f.startswith("fresh")]


@pytest.fixture
def rec(tmp_path):
    root, _, _ = _tree(tmp_path)
    prefix = str(tmp_path / "r")
    datasets.convert_cityscapes(root, "train", prefix, progress=False)
    return prefix


def test_rec_without_idx(rec):
    os.remove(rec + ".idx")
    with pytest.raises(RecordFileError, match=r"r\.rec: index .*r\.idx is missing"):
        SegRecordDataset(rec + ".rec")
    with pytest.raises(RecordFileError, match="no such RecordIO file"):
        SegRecordDataset(rec + "_nothing.rec")


def test_idx_of_another_rec(rec, tmp_path):
    # an index whose offsets point inside records of this file
    with open(rec + ".idx") as f:
        lines = [l.split("\t") for l in f.read().splitlines()]
    with open(rec + ".idx", "w") as f:
        for key, off in lines:
            f.write("%s\t%d\n" % (key, int(off) + 4))
    with pytest.raises(RecordFileError, match=r"r\.idx does not match .*r\.rec: no record "
                                              r"starts at offset"):
        SegRecordDataset(rec + ".rec")


def test_idx_of_a_truncated_or_longer_rec(rec, tmp_path):
    shutil.copy(rec + ".idx", str(tmp_path / "saved.idx"))
    _truncate(rec + ".rec", 0.9)
    with pytest.raises(RecordFileError, match="does not match"):
        SegRecordDataset(rec + ".rec")
    # a stale index of a file that has grown: the last indexed record is not the file's end
    with open(rec + ".rec", "ab") as f:
        f.write(b"\0" * 10 ** 6)
    with pytest.raises(RecordFileError, match="does not match"):
        SegRecordDataset(rec + ".rec")


def test_idx_with_swapped_keys_is_caught_on_read(rec):
    with open(rec + ".idx") as f:
        lines = [l.split("\t") for l in f.read().splitlines()]
    lines[0][1], lines[1][1] = lines[1][1], lines[0][1]
    with open(rec + ".idx", "w") as f:
        f.write("".join("%s\t%s\n" % tuple(l) for l in lines))
    ds = SegRecordDataset(rec + ".rec")
    with pytest.raises(RecordFileError, match="offset of key 0 holds record 1"):
        ds[0]


def test_corrupt_record_payload_names_the_record(rec):
    name = SegRecordDataset(rec + ".rec").meta(1)["name"]
    off = int(open(rec + ".idx").read().splitlines()[1].split("\t")[1])
    data = bytearray(open(rec + ".rec", "rb").read())
    png = data.index(b"\x89PNG", off)  # record 1's image bytes
    data[png + 100: png + 164] = b"\xff" * 64
    open(rec + ".rec", "wb").write(bytes(data))
    ds = SegRecordDataset(rec + ".rec")
    with pytest.raises(BadSampleError, match=r"r\.rec record 1 \(%s\): corrupt" % name):
        ds[1]
    assert ds[0][0].shape == (fx.H, fx.W, 3)  # the others still read
