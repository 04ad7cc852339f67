"""evaluate(): metrics over datasets, official Cityscapes output, and `duc-hdc evaluate`."""
import copy
import json
import math
import os

import cv2
import numpy as np
import pytest

from duc_hdc import cli, get_model
from duc_hdc.config import load_config, model_overrides
from duc_hdc.data import CityscapesFolder, SegRecordDataset
from duc_hdc.data.datasets import convert_cityscapes
from duc_hdc.data.labels import cityscapes_id_to_train_id
from duc_hdc.evaluation.evaluate import evaluate, sample_name, save_prediction
from duc_hdc.evaluation.metrics import SegmentationMetric, WorstImages
from duc_hdc.models.sidecar import write_sidecar
from duc_hdc.inference.segmenter import Segmenter

H, W = 37, 69  # not multiples of 8: the padding path is exercised
FRAMES = [("aachen", "000000", "000019"), ("aachen", "000001", "000019"),
          ("bremen", "000123", "000019")]


def _tiny(classes=19):
    return get_model("duc_hdc_resnet18", classes=classes, base_width=8)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """A Cityscapes val split in the official layout, its .rec, and a tiny 19-class model."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.RandomState(0)
    for k, (city, seq, frame) in enumerate(FRAMES):
        stem = "%s_%s_%s" % (city, seq, frame)
        img_dir = root / "leftImg8bit" / "val" / city
        gt_dir = root / "gtFine" / "val" / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        img = rng.randint(0, 256, (H, W, 3)).astype(np.uint8)
        # 6x6 blocks of labelIds 0..33: evaluated and ignored ids alike
        ids = np.kron(rng.randint(0, 34, (7, 12)), np.ones((6, 6), np.int64))[:H, :W]
        assert cv2.imwrite(str(img_dir / (stem + "_leftImg8bit.png")), img[:, :, ::-1])
        assert cv2.imwrite(str(gt_dir / (stem + "_gtFine_labelIds.png")), ids.astype(np.uint8))
    prefix = str(root / "rec" / "val")
    convert_cityscapes(str(root), "val", prefix, progress=False)
    net = _tiny()
    params = str(root / "tiny.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    return dict(root=str(root), rec=prefix + ".rec", net=net, params=params)


def _official(gt_root, pred_root, tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.cityscapesPath = gt_root
    args.predictionPath = pred_root
    args.predictionWalk = None
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = True
    args.JSONOutput = False
    args.quiet = True
    args.exportFile = str(tmp_path / "official.json")
    args.evalLabels = []
    gt_files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(gt_root, "gtFine"))
                      for f in fs if f.endswith("_gtFine_labelIds.png"))
    pred_files = [official.getPrediction(args, f) for f in gt_files]
    return pred_files, official.evaluateImgLists(pred_files, gt_files, args)


def test_saved_predictions_pass_the_official_cityscapes_evaluation(cityscapes, tmp_path):
    from cityscapesscripts.helpers.labels import trainId2label

    seg = Segmenter(cityscapes["net"])
    dataset = SegRecordDataset(cityscapes["rec"])
    save_dir = str(tmp_path / "results")
    metric = evaluate(seg, dataset, 19, save_dir=save_dir, progress=False)
    assert metric.num_pixels > 0
    names = sorted(os.listdir(os.path.join(save_dir, "labelIds")))
    assert names == ["%s_%s_%s_labelIds.png" % f for f in sorted(FRAMES)]
    assert len(os.listdir(os.path.join(save_dir, "color"))) == len(FRAMES)
    # the official script walks the whole save_dir: colour maps must not count as predictions
    pred_files, result = _official(cityscapes["root"], save_dir, tmp_path)
    assert all(os.path.dirname(p).endswith("labelIds") for p in pred_files)
    saved = cv2.imread(pred_files[0], cv2.IMREAD_UNCHANGED)
    assert saved.shape == (H, W) and saved.dtype == np.uint8
    assert set(np.unique(saved)) <= {trainId2label[t].id for t in range(19)}  # labelIds
    iou = metric.iou
    predicted = 0
    for t in range(19):
        expected = result["classScores"][trainId2label[t].name]
        if math.isnan(expected):
            assert math.isnan(iou[t]), trainId2label[t].name
        else:
            predicted += 1
            assert iou[t] == pytest.approx(expected, abs=1e-6), trainId2label[t].name
    assert predicted >= 5  # a meaningful comparison: many classes with a score
    assert metric.get()[1] == pytest.approx(result["averageScoreClasses"], abs=1e-6)
    # the folder dataset reads the same files to the same numbers
    folder = evaluate(seg, CityscapesFolder(cityscapes["root"], "val"), 19, progress=False)
    np.testing.assert_array_equal(folder.confusion, metric.confusion)
    np.testing.assert_array_equal(folder.outside, metric.outside)


def test_metric_is_the_confusion_of_the_predictions(cityscapes):
    seg = Segmenter(cityscapes["net"], mode="sliding", crop_size=(24, 40), stride=16)
    dataset = SegRecordDataset(cityscapes["rec"])
    metric = evaluate(seg, dataset, 19, progress=False, limit=2)
    want = SegmentationMetric(19)
    for i in range(2):
        img, label = dataset[i]
        want.update(label, seg.predict(img))
    np.testing.assert_array_equal(metric.confusion, want.confusion)
    assert metric.num_pixels == want.num_pixels > 0


class _Items(object):
    def __init__(self, items, names=None):
        self.items, self.names = items, names

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def meta(self, i):
        return {"name": self.names[i]} if self.names else {}


def test_bad_datasets_are_named():
    seg = Segmenter(_tiny(3), hybridize=False)
    img = np.zeros((16, 24, 3), np.uint8)
    with pytest.raises(ValueError, match="predicts 3 classes but num_classes=19"):
        evaluate(seg, _Items([(img, np.zeros((16, 24), np.uint8))]), 19, progress=False)
    with pytest.raises(ValueError, match=r"item 0 \(frame_a\): image is 16x24 but its label "
                                         r"is 8x24"):
        evaluate(seg, _Items([(img, np.zeros((8, 24), np.uint8))], ["x/frame_a.png"]), 3,
                 dataset_name="voc", progress=False)
    with pytest.raises(ValueError, match="no label"):
        evaluate(seg, _Items([(img, None)]), 3, progress=False)


def test_names_and_non_cityscapes_output(tmp_path):
    items = _Items([None] * 3, ["leftImg8bit/val/ulm/ulm_000001_000019_leftImg8bit.png",
                                "2007_000033", ""])
    assert [sample_name(items, i) for i in range(3)] == ["ulm_000001_000019", "2007_000033",
                                                         "000002"]
    pred = np.array([[0, 1], [20, 255]], np.uint8)
    paths = save_prediction(str(tmp_path), "2007_000033", pred, "voc")
    assert paths[0].endswith(os.path.join("trainIds", "2007_000033_trainIds.png"))
    np.testing.assert_array_equal(cv2.imread(paths[0], cv2.IMREAD_UNCHANGED), pred)
    paths = save_prediction(str(tmp_path), "ulm_000001_000019", pred, "cityscapes")
    # trainIds 0, 1 -> road 7, sidewalk 8; 255 -> unlabeled 0
    assert cv2.imread(paths[0], cv2.IMREAD_UNCHANGED)[0].tolist() == [7, 8]
    np.testing.assert_array_equal(
        cityscapes_id_to_train_id(cv2.imread(paths[0], cv2.IMREAD_UNCHANGED))[0], [0, 1])


# ------------------------------------------------------------------------ duc-hdc evaluate
def test_cli_evaluate(cityscapes, tmp_path, capsys):
    save_dir = str(tmp_path / "eval")
    rc = cli.main(["evaluate", "--params", cityscapes["params"], "--rec", cityscapes["rec"],
                   "--save-dir", save_dir, "--limit", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "road" in out and "mean IoU" in out and "2 images: mIoU" in out
    with open(os.path.join(save_dir, "metrics.json")) as f:
        doc = json.load(f)
    # an independent recomputation: the written labelId PNGs against the records' labels, the
    # confusion matrix and the official rule (a class counts once labelled or predicted) in numpy
    dataset = SegRecordDataset(cityscapes["rec"])
    conf = np.zeros((19, 19), np.int64)
    for i in range(2):
        label = dataset[i][1].ravel()
        png = os.path.join(save_dir, "labelIds", sample_name(dataset, i) + "_labelIds.png")
        pred = cityscapes_id_to_train_id(cv2.imread(png, cv2.IMREAD_UNCHANGED)).ravel()
        keep = label != 255
        np.add.at(conf, (label[keep], pred[keep]), 1)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    assert doc["images"] == 2 and doc["dataset"] == "cityscapes"
    assert doc["confusion"] == conf.tolist()
    assert doc["mean_iou"] == pytest.approx(np.mean(np.diag(conf)[union > 0] / union[union > 0]),
                                            abs=1e-12)
    assert doc["inference"]["mode"] == "whole" and doc["model"]["classes"] == 19
    assert len(os.listdir(os.path.join(save_dir, "labelIds"))) == 2

    # sliding window, multi-scale, flip, from the folder layout, JSON elsewhere
    out_json = str(tmp_path / "m.json")
    rc = cli.main(["evaluate", "--params", cityscapes["params"], "--root", cityscapes["root"],
                   "--split", "val", "--mode", "sliding", "--crop-size", "24,40", "--stride",
                   "16", "--scales", "0.75,1.0", "--flip", "--batch-size", "2", "--out-json",
                   out_json])
    assert rc == 0
    with open(out_json) as f:
        doc = json.load(f)
    assert doc["images"] == 3
    assert doc["inference"]["crop_size"] == [24, 40] and doc["inference"]["stride"] == [16, 16]
    assert doc["inference"]["scales"] == [0.75, 1.0] and doc["inference"]["flip"] is True
    capsys.readouterr()


def test_cli_evaluate_with_a_recipe(cityscapes, tmp_path, capsys):
    cfg = load_config("synthetic")
    net = get_model(cfg["model"]["name"], **model_overrides(cfg))
    params = str(tmp_path / "synthetic.params")
    net.save_parameters(params)
    rc = cli.main(["evaluate", "--config", "synthetic", "--params", params, "--rec",
                   cityscapes["rec"], "--limit", "1"])
    assert rc == 0
    assert "1 images: mIoU" in capsys.readouterr().out
    # weights of another model: the first mismatching parameter is named
    rc = cli.main(["evaluate", "--config", "synthetic", "--params", cityscapes["params"],
                   "--rec", cityscapes["rec"]])
    assert rc == 2
    assert "tiny.params does not fit the model: parameter" in capsys.readouterr().err


def test_cli_evaluate_errors(cityscapes, tmp_path, capsys):
    rc = cli.main(["evaluate", "--params", cityscapes["params"]])
    assert rc == 2
    assert "--rec FILE.rec or --root DIR" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--params", cityscapes["params"], "--rec",
                   str(tmp_path / "missing.rec")])
    assert rc == 2
    assert "missing.rec: no such RecordIO file" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--model", "no_such_model", "--rec", cityscapes["rec"]])
    assert rc == 2
    assert "duc_hdc_resnet101_cityscapes" in capsys.readouterr().err


def test_cli_evaluate_warns_when_the_dataset_has_other_classes(cityscapes, capsys, caplog,
                                                              tmp_path):
    """A 19-class model evaluated as --dataset voc (21 classes) ran without a word before; on
    records that name their dataset (Cityscapes) it is now refused, elsewhere warned."""
    rc = cli.main(["evaluate", "--params", cityscapes["params"], "--rec", cityscapes["rec"],
                   "--dataset", "voc", "--limit", "1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--dataset voc" in err and "cityscapes records" in err, err
    # records that do not name their dataset (written by other tools): a warning
    from duc_hdc.data.recordio import RecordWriter, encode_label

    img, lab, _ = SegRecordDataset(cityscapes["rec"]).sample(0)
    anonymous = str(tmp_path / "anonymous")
    with RecordWriter(anonymous) as writer:
        writer.write(cv2.imencode(".png", img[:, :, ::-1])[1].tobytes(), encode_label(lab),
                     dict(name="scene"))
    assert cli.main(["evaluate", "--params", cityscapes["params"], "--rec", anonymous + ".rec",
                     "--dataset", "voc", "--no-progress"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("predicts 19 classes but voc has 21" in m for m in warned), warned
    caplog.clear()
    rc = cli.main(["evaluate", "--params", cityscapes["params"], "--rec", cityscapes["rec"],
                   "--limit", "1", "--no-progress"])
    assert rc == 0 and not [r for r in caplog.records if "predicts" in r.getMessage()]
    capsys.readouterr()


def test_per_image_scores_and_worst_images(cityscapes):
    seg = Segmenter(cityscapes["net"])
    dataset = SegRecordDataset(cityscapes["rec"])
    keeper = WorstImages(2)
    metric = evaluate(seg, dataset, 19, progress=False, worst=keeper)
    plain = evaluate(seg, dataset, 19, progress=False)
    np.testing.assert_array_equal(metric.confusion, plain.confusion)
    want = []
    for i in range(len(dataset)):
        img, label = dataset[i]
        one = SegmentationMetric(19)
        one.update(label, seg.predict(img))
        want.append(one.mean_iou)
    assert [s["mean_iou"] for s in keeper.per_image] == pytest.approx(want, abs=1e-12)
    assert [s["name"] for s in keeper.per_image] == ["%s_%s_%s" % f for f in sorted(FRAMES)]
    worst = keeper.worst()
    assert [w["index"] for w in worst] == list(np.argsort(want, kind="stable")[:2])
    img, label = dataset[worst[0]["index"]]
    np.testing.assert_array_equal(worst[0]["image"], img)
    np.testing.assert_array_equal(worst[0]["label"], label)
    np.testing.assert_array_equal(worst[0]["pred"], seg.predict(img))
