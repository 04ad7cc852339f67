"""SegmentationMetric: hand-worked confusion matrices and the official Cityscapes evaluator."""
import copy
import json
import math

import cv2
import mxnet as mx
import numpy as np
import pytest

from duc_hdc.evaluation.metrics import SegmentationMetric, WorstImages


def test_hand_worked_confusion_matrix():
    # 3 classes, ignore 255; gt -> pred pixel by pixel:
    labels = np.array([[0, 0, 1, 1],     # 0->0  0->1  1->1  1->1
                       [2, 2, 255, 0],   # 2->2  2->0  (ign) 0->0
                       [1, 2, 0, 255]])  # 1->2  2->2  0->0  (ign)
    preds = np.array([[0, 1, 1, 1],
                      [2, 0, 2, 0],
                      [2, 2, 0, 1]])
    m = SegmentationMetric(3)
    m.update(labels, preds)
    expected = np.array([[3, 1, 0],   # gt 0: 4 pixels, 3 right, 1 as class 1
                         [0, 2, 1],   # gt 1: 3 pixels, 2 right, 1 as class 2
                         [1, 0, 2]])  # gt 2: 3 pixels, 2 right, 1 as class 0
    np.testing.assert_array_equal(m.confusion, expected)
    np.testing.assert_array_equal(m.outside, [0, 0, 0])
    assert m.num_pixels == 10
    # column sums 4, 3, 3; IoU = tp / (row + col - tp)
    # c0 = 3 / (4 + 4 - 3) = 0.6, c1 = 2 / (3 + 3 - 2) = 0.5, c2 = 2 / (3 + 3 - 2) = 0.5
    np.testing.assert_allclose(m.iou, [0.6, 0.5, 0.5])
    pixacc, miou = m.get()
    assert pixacc == pytest.approx(7 / 10)
    assert miou == pytest.approx(1.6 / 3)


def test_docstring_example():
    m = SegmentationMetric(3)
    m.update(np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 0]]))
    np.testing.assert_array_equal(m.confusion, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(m.iou, [1.0, 0.5, 0.0])  # c1: 1 / (1 + 2 - 1); c2: 0 / 1
    assert m.get() == pytest.approx((2 / 3, 0.5))


def test_predictions_outside_classes_are_misses():
    labels = np.array([[0, 1, 1],
                       [255, 0, 2]])
    preds = np.array([[255, 1, 7],     # 0->255 miss, 1->1, 1->7 miss
                      [3, -1, 2]])     # ignored pixel (dropped), 0->-1 miss, 2->2
    m = SegmentationMetric(3)
    m.update(labels, preds)
    np.testing.assert_array_equal(m.confusion, [[0, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(m.outside, [2, 1, 0])
    assert m.num_pixels == 5
    # c0: 0 / (2 + 0 - 0) = 0 (not NaN: it is in the ground truth); c1: 1 / (2 + 1 - 1); c2: 1
    np.testing.assert_allclose(m.iou, [0.0, 0.5, 1.0])
    assert m.get() == pytest.approx((2 / 5, 0.5))
    # a metric that dropped those pixels would report c1 = 1 and mIoU = 1
    assert m.iou[1] != pytest.approx(1.0)


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    labels = np.array([[0, 0], [1, 1]])
    preds = np.array([[0, 2], [1, 1]])
    m = SegmentationMetric(4)
    m.update(labels, preds)
    iou = m.iou
    # c0 = 1 / (2 + 1 - 1); c1 = 1; c2 absent from gt but predicted -> 0; c3 absent -> NaN
    np.testing.assert_allclose(iou[:3], [0.5, 1.0, 0.0])
    assert math.isnan(iou[3])
    assert m.get()[1] == pytest.approx(1.5 / 3)  # mean over 3 classes, not 4
    d = m.to_dict(["a", "b", "c", "d"])
    assert d["class_iou"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": None}
    json.dumps(d, allow_nan=False)  # JSON-ready: no NaN
    table = m.per_class_table(["road", "car", "bus", "train"])
    train_row = [line for line in table.splitlines() if line.startswith("train")][0]
    assert "n/a" in train_row
    assert "0.5000" in table and "3 of 4 classes" in table


def test_ignored_pixels_create_no_false_positives():
    labels = np.array([[255, 255], [255, 0]])
    preds = np.array([[1, 1], [1, 0]])
    m = SegmentationMetric(2)
    m.update(labels, preds)
    np.testing.assert_array_equal(m.confusion, [[1, 0], [0, 0]])
    assert m.iou[0] == 1.0 and math.isnan(m.iou[1])
    assert m.get() == (1.0, 1.0)


def test_custom_ignore_label():
    m = SegmentationMetric(2, ignore_label=-1)
    m.update(np.array([-1, 0, 1]), np.array([0, 0, 1]))
    np.testing.assert_array_equal(m.confusion, [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="255"):
        m.update(np.array([255, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="ignore_label 1"):
        SegmentationMetric(3, ignore_label=1)


def test_empty_metric_is_nan():
    pixacc, miou = SegmentationMetric(3).get()
    assert math.isnan(pixacc) and math.isnan(miou)


def test_shape_mismatch_names_both_shapes():
    m = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"labels \(2, 3\) and preds \(3, 2\)"):
        m.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_labels_outside_classes_are_rejected():
    m = SegmentationMetric(19)
    with pytest.raises(ValueError, match=r"\[26, 33\]"):
        m.update(np.array([0, 26, 33, 255]), np.array([0, 0, 0, 0]))
    with pytest.raises(ValueError, match="non-integer"):
        m.update(np.array([0, 1]), np.array([0.5, 1.0]))


def test_mxnet_inputs_and_device_lists():
    rng = np.random.RandomState(0)
    logits = rng.rand(2, 3, 4, 5).astype(np.float32)
    labels = rng.randint(0, 3, size=(2, 4, 5))
    labels[0, 0, :] = 255
    expected = SegmentationMetric(3)
    expected.update(labels, logits.argmax(axis=1))

    m = SegmentationMetric(3)
    # mx.nd.argmax returns float32: accepted when whole-valued
    m.update([mx.nd.array(labels[:1], dtype="int32"), mx.nd.array(labels[1:], dtype="int32")],
             [mx.nd.array(logits[:1]).argmax(axis=1), mx.nd.array(logits[1:]).argmax(axis=1)])
    np.testing.assert_array_equal(m.confusion, expected.confusion)
    with pytest.raises(ValueError, match="2 label arrays but 1"):
        m.update([labels[0], labels[1]], [labels[0]])


def _naive_confusion(labels, preds, k, ignore):
    conf = np.zeros((k, k + 1), np.int64)
    for g, p in zip(labels.ravel(), preds.ravel()):
        if g == ignore:
            continue
        conf[g, p if 0 <= p < k else k] += 1
    return conf


def test_vectorized_matches_loop_and_merge_and_reset():
    rng = np.random.RandomState(1)
    k = 5
    labels = rng.randint(0, k, size=(4, 9, 7))
    labels[rng.rand(*labels.shape) < 0.2] = 255
    preds = rng.randint(-1, k + 2, size=labels.shape)
    whole = SegmentationMetric(k)
    whole.update(labels, preds)
    naive = _naive_confusion(labels, preds, k, 255)
    np.testing.assert_array_equal(whole.confusion, naive[:, :k])
    np.testing.assert_array_equal(whole.outside, naive[:, k])

    # two "workers", merged
    a, b = SegmentationMetric(k), SegmentationMetric(k)
    a.update(labels[:1], preds[:1])
    b.update(labels[1:], preds[1:])
    c = a + b
    np.testing.assert_array_equal(c.confusion, whole.confusion)
    first = _naive_confusion(labels[:1], preds[:1], k, 255)
    np.testing.assert_array_equal(a.confusion, first[:, :k])
    a += b
    np.testing.assert_array_equal(a.confusion, whole.confusion)
    np.testing.assert_array_equal(a.outside, whole.outside)
    assert a.get() == whole.get()
    with pytest.raises(ValueError, match="different settings"):
        a.merge(SegmentationMetric(k + 1))
    a.reset()
    assert a.num_pixels == 0 and not a.confusion.any()


# ------------------------------------------------------------------ official Cityscapes evaluator
def _labelid_to_trainid_lut():
    from cityscapesscripts.helpers.labels import labels
    lut = np.full(256, 255, np.uint8)
    for label in labels:
        if label.id >= 0 and 0 <= label.trainId < 255:
            lut[label.id] = label.trainId
    return lut


def test_matches_official_cityscapes_evaluation(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    from cityscapesscripts.helpers.labels import id2label, trainId2label

    rng = np.random.RandomState(7)
    lut = _labelid_to_trainid_lut()
    evaluated_ids = [i for i in range(34) if not id2label[i].ignoreInEval]
    assert len(evaluated_ids) == 19
    bus, train = 28, 31
    gt_choices = [i for i in range(34) if i not in (bus, train)]   # bus and train absent in gt
    pred_choices = [i for i in evaluated_ids if i != train]        # bus predicted, train never
    not_evaluated_preds = (4, 9)                                   # "static", "parking"

    gt_root = tmp_path / "cityscapes"
    pred_root = tmp_path / "results"
    pred_root.mkdir()
    frames = [("aachen", "000000", "000019"), ("aachen", "000001", "000019"),
              ("bremen", "000123", "000019")]
    gt_files, ours = [], SegmentationMetric(19)
    dropped = SegmentationMetric(19)  # what a metric that drops out-of-class predictions reports
    correct = valid = 0
    for city, seq, frame in frames:
        gt = rng.choice(gt_choices, size=(32, 64)).astype(np.uint8)
        pred = gt.copy()
        noise = rng.rand(32, 64) < 0.4
        pred[noise] = rng.choice(pred_choices, size=int(noise.sum()))
        pred[pred == train] = evaluated_ids[0]
        # a block of predictions outside the 19 classes, on pixels with evaluated ground truth
        block = np.zeros_like(noise)
        block[4:12, 8:40] = True
        block &= lut[gt] != 255
        assert block.sum() > 50
        pred[block] = rng.choice(not_evaluated_preds, size=int(block.sum()))

        city_dir = gt_root / "gtFine" / "val" / city
        city_dir.mkdir(parents=True, exist_ok=True)
        gt_path = city_dir / "{}_{}_{}_gtFine_labelIds.png".format(city, seq, frame)
        assert cv2.imwrite(str(gt_path), gt)
        assert cv2.imwrite(str(pred_root / "{}_{}_{}_pred.png".format(city, seq, frame)), pred)
        gt_files.append(str(gt_path))

        # ours works on trainIds, read back from the PNGs
        gt_read = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(gt_read, gt)
        ours.update(lut[gt], lut[pred])
        keep = lut[pred] != 255
        dropped.update(np.where(keep, lut[gt], 255), lut[pred])
        evaluated = np.isin(gt, evaluated_ids)
        correct += int((evaluated & (pred == gt)).sum())
        valid += int(evaluated.sum())

    args = copy.copy(official.args)
    args.cityscapesPath = str(gt_root)
    args.predictionPath = str(pred_root)
    args.predictionWalk = None
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = True
    args.JSONOutput = False
    args.quiet = True
    args.exportFile = str(tmp_path / "result.json")
    args.evalLabels = []
    pred_files = [official.getPrediction(args, f) for f in gt_files]
    assert [p.rsplit("_", 1)[0] for p in map(str, pred_files)] == [
        str(pred_root / "_".join(f)) for f in frames]
    result = official.evaluateImgLists(pred_files, gt_files, args)

    # the confusion matrix, re-indexed from labelIds to trainIds
    conf = np.array(result["confMatrix"], dtype=np.int64)
    ids = [trainId2label[t].id for t in range(19)]
    others = [i for i in range(conf.shape[1]) if i not in ids]
    np.testing.assert_array_equal(ours.confusion, conf[np.ix_(ids, ids)])
    np.testing.assert_array_equal(ours.outside, conf[np.ix_(ids, others)].sum(axis=1))
    assert ours.outside.sum() > 0

    # class IoUs and their mean
    iou = ours.iou
    for t in range(19):
        expected = result["classScores"][trainId2label[t].name]
        if math.isnan(expected):
            assert math.isnan(iou[t]), trainId2label[t].name
        else:
            assert iou[t] == pytest.approx(expected, abs=1e-6), trainId2label[t].name
    assert math.isnan(iou[16])            # train: absent and never predicted
    assert iou[15] == 0.0                 # bus: absent but predicted
    pixacc, miou = ours.get()
    assert miou == pytest.approx(result["averageScoreClasses"], abs=1e-6)
    assert pixacc == pytest.approx(correct / valid, abs=1e-12)
    # the miss rule matters here: dropping those pixels would disagree with the official number
    assert abs(dropped.get()[1] - result["averageScoreClasses"]) > 1e-3


# ------------------------------------------------------------------ per-image scores, worst images
def _numpy_miou(label, pred, k):
    valid = label != 255
    conf = np.bincount(label[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    return (np.diag(conf)[union > 0] / union[union > 0]).mean() if (union > 0).any() else None


def test_worst_images_keeps_the_n_lowest_per_image_miou():
    rng = np.random.RandomState(0)
    pairs = [(rng.randint(0, 3, (6, 8)), rng.randint(0, 3, (6, 8))) for _ in range(30)]
    pairs[7] = (np.full((6, 8), 255), pairs[7][1])  # no labelled pixel: scored None, not ranked
    first = min(range(30), key=lambda i: _numpy_miou(*pairs[i], 3) or 2.0)
    pairs[20] = pairs[25] = tuple(a.copy() for a in pairs[first])  # ties with the worst
    keeper = WorstImages(4)
    for i, (label, pred) in enumerate(pairs):
        one = SegmentationMetric(3)
        one.update(label, pred)
        image = np.full((6, 8, 3), i, np.uint8)
        keeper.add(i, "img%02d" % i, one, image, label, pred)
        image[:] = 99  # the keeper holds copies
        assert len(keeper.worst()) <= 4  # never more arrays than asked for
    want = [_numpy_miou(label, pred, 3) for label, pred in pairs]
    assert [s["mean_iou"] for s in keeper.per_image] == pytest.approx(want)
    assert keeper.per_image[7]["mean_iou"] is None and keeper.per_image[7]["pixels"] == 0
    ranked = sorted((v, i) for i, v in enumerate(want) if v is not None)[:4]
    worst = keeper.worst()
    assert [w["index"] for w in worst] == [i for _, i in ranked]
    assert [w["mean_iou"] for w in worst] == pytest.approx([v for v, _ in ranked], abs=1e-12)
    assert [w["index"] for w in worst][:3] == sorted([first, 20, 25])  # ties: earlier first
    for w in worst:
        assert w["name"] == "img%02d" % w["index"] and (w["image"] == w["index"]).all()
        np.testing.assert_array_equal(w["label"], pairs[w["index"]][0])
        np.testing.assert_array_equal(w["pred"], pairs[w["index"]][1])


def test_worst_images_hand_worked_and_bad_count():
    keeper = WorstImages(1)
    one = SegmentationMetric(3)
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 1, gt 1, pred 2 -> 1/2; class 2 absent
    one.update(np.array([[0, 0], [1, 255]]), np.array([[0, 1], [1, 1]]))
    keeper.add(0, "a", one, np.zeros((2, 2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
    assert keeper.per_image == [dict(index=0, name="a", mean_iou=0.5,
                                     pixel_accuracy=pytest.approx(2 / 3), pixels=3)]
    with pytest.raises(ValueError, match="worst images must be a whole number >= 0, got -1"):
        WorstImages(-1)
