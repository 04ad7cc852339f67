"""The demo end to end on a tiny synthetic set: every stage runs and writes what it promises."""
import glob
import json
import os

import cv2
import numpy as np

from duc_hdc import cli
from duc_hdc.data.labels import cityscapes_id_to_train_id


def _miou_from_files(eval_dir, data_root):
    """mIoU recomputed from the written labelId PNGs and the synthetic ground truth, with a
    confusion matrix built here in numpy (independent of SegmentationMetric)."""
    conf = np.zeros((19, 19), np.int64)
    for path in glob.glob(os.path.join(eval_dir, "labelIds", "*_labelIds.png")):
        name = os.path.basename(path)[:-len("_labelIds.png")]
        city = name.split("_")[0]
        gt_path = os.path.join(data_root, "gtFine", "val", city, name + "_gtFine_labelIds.png")
        gt = cityscapes_id_to_train_id(cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)).ravel()
        pred = cityscapes_id_to_train_id(cv2.imread(path, cv2.IMREAD_UNCHANGED)).ravel()
        keep = gt != 255
        np.add.at(conf, (gt[keep], pred[keep]), 1)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0  # the official rule: a class counts once predicted or labelled
    return float(np.mean(np.diag(conf)[present] / union[present]))


def test_demo_end_to_end_small(tmp_path, capsys):
    import duc_hdc.demo.pipeline as demo

    result = demo.run_demo(str(tmp_path), num_train=8, num_val=2, size=(64, 128),
                           overrides=["train.epochs=1", "data.crop_size=[64,128]",
                                      "train.batch_size_per_device=4", "data.num_workers=0",
                                      "model.base_width=4", "train.val_every_epochs=1"])
    assert abs(_miou_from_files(result["eval"], result["data"]) - result["mean_iou"]) < 1e-6
    assert os.path.exists(result["params"]) and os.path.exists(result["curves"])
    assert len([f for f in os.listdir(result["predictions"]) if f.endswith("_panel.png")]) == 2
    assert any(f.endswith("-symbol.json") for f in result["export"])
    labelids = os.listdir(os.path.join(result["eval"], "labelIds"))
    assert len(labelids) == 2 and all(f.endswith("_labelIds.png") for f in labelids)
    with open(tmp_path / "demo.json") as f:
        assert json.load(f)["mean_iou"] == result["mean_iou"]
    # a second run reuses data, RecordIO and the trained model, and prints the summary
    rc = cli.main(["demo", "--workdir", str(tmp_path), "--set", "model.base_width=4",
                   "--set", "data.crop_size=[64,128]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "mIoU: %.4f" % result["mean_iou"]
    assert "training already done" not in out  # logged, not printed
