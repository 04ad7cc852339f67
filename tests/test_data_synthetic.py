"""Synthetic scenes: real Cityscapes layout, official ids, determinism, speed, colour ambiguity."""
import cProfile
import glob
import os
import pstats
import subprocess
import sys

import cv2
import numpy as np

from duc_hdc.data import SegRecordDataset, datasets, labels
from duc_hdc.demo import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATED = [7, 8, 11, 12, 17, 20, 21, 22, 23, 24, 26]


def test_layout_and_conversion(tmp_path):
    root = str(tmp_path / "syn")
    res = subprocess.run([sys.executable, "tools/make_synthetic_cityscapes.py", "--out", root,
                          "--train", "4", "--val", "2", "--test", "1", "--size", "64,128",
                          "--seed", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wrote 4 train, 2 val, 1 test images of 64x128" in res.stdout
    images = sorted(glob.glob(os.path.join(root, "leftImg8bit", "train", "*", "*.png")))
    assert len(images) == 4
    name = os.path.basename(images[0])
    city, seq, frame, suffix = name.split("_")
    assert suffix == "leftImg8bit.png" and len(seq) == 6 and frame == "000019"
    gt = os.path.join(root, "gtFine", "train", city, "%s_%s_%s_gtFine_labelIds.png"
                      % (city, seq, frame))
    ids = cv2.imread(gt, cv2.IMREAD_UNCHANGED)
    assert ids.shape == (64, 128) and ids.dtype == np.uint8
    assert not os.path.exists(os.path.join(root, "gtFine", "test"))
    # every tool runs on it as on the real dataset
    report = datasets.convert_cityscapes(root, "val", str(tmp_path / "val"), progress=False)
    assert report.written == 2 and not report.skipped
    ds = SegRecordDataset(str(tmp_path / "val.rec"))
    img, label = ds[0]
    assert img.shape == (64, 128, 3)
    folder = datasets.CityscapesFolder(root, "val")
    np.testing.assert_array_equal(folder[0][1], label)


def test_scenes_use_official_ids_and_enough_classes():
    seen = set()
    for i in range(12):
        rgb, ids = synthetic.render_scene(synthetic.scene_rng(0, "train", i), 128, 256)
        assert rgb.shape == (128, 256, 3) and rgb.dtype == np.uint8
        assert ids.shape == (128, 256) and ids.dtype == np.uint8
        assert not labels.invalid_values(ids, "cityscapes")
        seen |= set(np.unique(ids).tolist())
    assert set(EVALUATED) <= seen  # 11 evaluated classes
    assert {0, 1} & seen  # ignored ids at the bottom edge exercise the 255 mapping
    assert seen <= set(synthetic.USED_LABEL_IDS)
    train_ids = labels.cityscapes_id_to_train_id(np.array(sorted(seen)))
    assert 255 in train_ids and len(set(train_ids) - {255}) >= 10


def test_deterministic_per_seed_and_index():
    a = synthetic.render_scene(synthetic.scene_rng(5, "val", 2), 64, 128)
    b = synthetic.render_scene(synthetic.scene_rng(5, "val", 2), 64, 128)
    c = synthetic.render_scene(synthetic.scene_rng(6, "val", 2), 64, 128)
    d = synthetic.render_scene(synthetic.scene_rng(5, "train", 2), 64, 128)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_parallel_rendering_writes_the_same_files(tmp_path):
    for workers in (1, 2):
        synthetic.make_synthetic_cityscapes(str(tmp_path / str(workers)), num_train=3, num_val=2,
                                            size=(64, 128), seed=3, progress=False,
                                            workers=workers)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.png"))
    assert len(files) == (3 + 2) * 3  # image, labelIds and instanceIds per scene
    assert files == sorted(p.relative_to(tmp_path / "2") for p in (tmp_path / "2").rglob("*.png"))
    for f in files:
        assert (tmp_path / "1" / f).read_bytes() == (tmp_path / "2" / f).read_bytes(), f


def _python_calls(height, width, index):
    profile = cProfile.Profile()
    profile.enable()
    synthetic.render_scene(synthetic.scene_rng(0, "train", index), height, width)
    profile.disable()
    return pstats.Stats(profile).total_calls


def test_rendering_is_vectorized():
    """The generator's speed comes from numpy: its Python work (function calls, counted, not
    timed) does not grow with the pixel count. A per-pixel or per-row Python loop would make
    4x the pixels cost far more than 2x the calls (256x512 has 131,072 pixels)."""
    for index in range(3):
        small, large = _python_calls(256, 512, index), _python_calls(512, 1024, index)
        assert small < 10000 and large < 2 * small, (index, small, large)


def test_colour_alone_does_not_solve_it():
    """A per-pixel nearest-class-mean colour classifier stays far below the demo's 0.85."""
    def pixels(split, n):
        xs, ys = [], []
        for i in range(n):
            rgb, ids = synthetic.render_scene(synthetic.scene_rng(0, split, i), 128, 256)
            xs.append(rgb.reshape(-1, 3)[::5].astype(np.float32))
            ys.append(labels.cityscapes_id_to_train_id(ids).reshape(-1)[::5])
        return np.concatenate(xs), np.concatenate(ys)

    xt, yt = pixels("train", 16)
    xv, yv = pixels("val", 8)
    classes = [k for k in range(19) if np.any(yt == k)]
    means = np.stack([xt[yt == k].mean(0) for k in classes])
    pred = np.array(classes)[np.argmin(((xv[:, None] - means[None]) ** 2).sum(-1), 1)]
    valid = yv != 255
    ious = []
    for k in classes:
        union = ((pred == k) | (yv == k)) & valid
        if union.any():
            ious.append(((pred == k) & (yv == k) & valid).sum() / union.sum())
    assert np.mean(ious) < 0.45, np.mean(ious)


def test_cli_data_synthetic_says_what_it_wrote_once(tmp_path, capsys, caplog):
    """The summary was printed twice: the library's INFO log line and the command's own."""
    import logging

    from duc_hdc import cli

    caplog.set_level(logging.INFO)
    rc = cli.main(["data", "synthetic", "--out", str(tmp_path / "s"), "--train", "1", "--val",
                   "1", "--size", "32,64", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("wrote 1 train, 1 val") == 1, out
    assert not [r for r in caplog.records if "synthetic images" in r.getMessage()
                and r.levelno >= logging.INFO], caplog.text
