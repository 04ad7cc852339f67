"""evaluate on the .rec files engineers feed it: labels out of range, mixed sizes, no items."""
import cv2
import numpy as np
import pytest

from duc_hdc import cli, get_model
from duc_hdc.data import SegRecordDataset
from duc_hdc.data.recordio import RecordWriter, encode_label
from duc_hdc.evaluation.evaluate import evaluate
from duc_hdc.models.sidecar import write_sidecar

from run_helpers import error_line

K = 3


def _rec(prefix, items):
    with RecordWriter(str(prefix)) as w:
        for k, (img, lab) in enumerate(items):
            ok, data = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
            assert ok
            w.write(data.tobytes(), encode_label(np.asarray(lab, np.uint8)),
                    dict(name="scene%d" % k))
    return str(prefix) + ".rec"


def _img(h, w, seed):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


class _Fixed(object):
    """A segmenter whose prediction of each image is given (by image size)."""
    classes = K

    def __init__(self, preds):
        self.preds = {np.shape(p): np.asarray(p, np.uint8) for p in preds}

    def predict(self, rgb):
        return self.preds[rgb.shape[:2]]


def test_images_of_different_sizes_give_the_hand_computed_confusion(tmp_path):
    labels = [[[0, 0, 1], [2, 255, 1]], [[2, 2]]]  # 2x3 and 1x2
    preds = [[[0, 1, 1], [2, 2, 0]], [[2, 0]]]
    rec = _rec(tmp_path / "mixed", [(_img(2, 3, 0), labels[0]), (_img(1, 2, 1), labels[1])])
    metric = evaluate(_Fixed(preds), SegRecordDataset(rec), K, progress=False)
    # rows: ground truth 0, 1, 2; columns: prediction (the 255 pixel left out)
    np.testing.assert_array_equal(metric.confusion, [[1, 1, 0], [1, 1, 0], [1, 0, 2]])
    # IoU = TP / (TP + FP + FN): 1 / (1 + 2 + 1), 1 / (1 + 1 + 1), 2 / (2 + 0 + 1)
    np.testing.assert_allclose(metric.iou, [1 / 4, 1 / 3, 2 / 3])
    pixel_accuracy, mean_iou = metric.get()
    assert pixel_accuracy == pytest.approx(4 / 7)
    assert mean_iou == pytest.approx((1 / 4 + 1 / 3 + 2 / 3) / 3)


def test_a_label_outside_the_classes_names_the_file_and_the_item(tmp_path, capsys):
    good = np.zeros((16, 24), np.uint8)
    bad = good.copy()
    bad[3:5, 3:5] = 40  # neither a class (0..2) nor the ignore label
    rec = _rec(tmp_path / "val", [(_img(16, 24, 0), good), (_img(16, 24, 1), bad)])
    with pytest.raises(ValueError) as err:
        evaluate(_Fixed([good]), SegRecordDataset(rec), K, progress=False)
    message = str(err.value)
    assert rec in message and "item 1 (scene1)" in message and "[40]" in message
    net = get_model("duc_hdc_resnet18", classes=K, base_width=8)
    params = str(tmp_path / "tiny.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    assert cli.main(["evaluate", "--model", params, "--rec", rec, "--no-progress"]) == 2
    line = error_line(capsys)
    assert rec in line and "item 1 (scene1)" in line and "0..2" in line
