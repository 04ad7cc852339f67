"""evaluate as a new user runs it wrong: --out-json onto its own inputs, scales in percent, the
records of one dataset scored with the model of another."""
import json
import os

import cv2
import numpy as np
import pytest

from duc_hdc import cli, get_model
from duc_hdc.data.recordio import RecordWriter, encode_label
from duc_hdc.evaluation import evaluate as evaluate_mod
from duc_hdc.models.sidecar import write_sidecar

from run_helpers import error_line


def _rec(prefix, dataset, classes, n=2, h=32, w=64):
    rng = np.random.RandomState(len(dataset))
    with RecordWriter(str(prefix)) as writer:
        for k in range(n):
            img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
            ok, data = cv2.imencode(".png", img)
            assert ok
            lab = rng.randint(0, classes, (h, w)).astype(np.uint8)
            writer.write(data.tobytes(), encode_label(lab),
                         dict(name="scene%d" % k, dataset=dataset, split="val"))
    return str(prefix) + ".rec"


def _model(path, classes, dataset):
    net = get_model("duc_hdc_resnet18", classes=classes, base_width=8)
    net.save_parameters(path)
    write_sidecar(path, net.config, dataset=dataset)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalmistakes")
    return dict(
        root=root,
        city=_model(str(root / "city.params"), 19, "cityscapes"),
        kitti=_model(str(root / "kitti.params"), 2, "kitti_road"),
        city_rec=_rec(root / "city_val", "cityscapes", 19),
        kitti_rec=_rec(root / "kitti_val", "kitti_road", 2))


def _evaluate(model, rec, *extra):
    return cli.main(["evaluate", "--model", model, "--rec", rec, "--no-progress"] + list(extra))


def _no_evaluation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("evaluated before the outputs were checked")
    monkeypatch.setattr(evaluate_mod, "evaluate", refuse)


def _digest(path):
    return open(path, "rb").read()


# ------------------------------------------------------------------------------ --out-json
def test_out_json_never_replaces_the_commands_own_inputs(files, capsys, monkeypatch):
    _no_evaluation(monkeypatch)
    model, rec = files["city"], files["city_rec"]
    for target in (model, model[:-len(".params")] + ".json", rec, rec[:-4] + ".idx"):
        before = _digest(target)
        assert _evaluate(model, rec, "--out-json", target) == 2
        line = error_line(capsys)
        assert "--out-json" in line and target in line, line
        assert _digest(target) == before


def test_out_json_never_replaces_a_file_that_is_no_metrics_file(files, tmp_path, capsys,
                                                                  monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    folder = tmp_path / "out"
    folder.mkdir()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    _no_evaluation(monkeypatch)
    for target, words in ((notes, "not the metrics"), (folder, "folder"),
                          (blocker / "m.json", "afile")):
        assert _evaluate(files["city"], files["city_rec"], "--out-json", str(target)) == 2
        line = error_line(capsys)
        assert "--out-json" in line and words in line, line
    assert notes.read_text() == "my notes"


def test_out_json_replaces_the_metrics_of_an_earlier_evaluation(files, tmp_path, capsys):
    out = str(tmp_path / "m.json")
    assert _evaluate(files["city"], files["city_rec"], "--out-json", out) == 0
    first = json.load(open(out))
    assert _evaluate(files["city"], files["city_rec"], "--out-json", out) == 0
    assert json.load(open(out))["mean_iou"] == first["mean_iou"]


# ------------------------------------------------------------------------------ --scales
@pytest.mark.parametrize("scales", ["inf", "nan", "75,100,125", "1e6", "1e-9"])
def test_scales_that_are_no_factors_are_refused_by_the_parser(files, capsys, scales):
    with pytest.raises(SystemExit) as e:
        _evaluate(files["city"], files["city_rec"], "--scales", scales)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--scales" in err and "0.75" in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------ datasets
def test_records_of_another_dataset_than_the_models_are_refused(files, capsys):
    assert _evaluate(files["city"], files["kitti_rec"]) == 2
    line = error_line(capsys)
    assert "kitti_road" in line and "cityscapes" in line and files["kitti_rec"] in line, line


def test_the_dataset_defaults_to_what_records_and_model_say(files, tmp_path, capsys):
    out = str(tmp_path / "k.json")
    assert _evaluate(files["kitti"], files["kitti_rec"], "--out-json", out) == 0
    captured = capsys.readouterr()
    assert "predicts 2 classes but" not in captured.err  # no class-count warning
    assert json.load(open(out))["dataset"] == "kitti_road"
    assert "road" in captured.out  # class rows named, not numbered


def test_a_root_that_is_no_folder_and_the_coarse_split_are_named(files, tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert cli.main(["evaluate", "--model", files["city"], "--root", missing,
                     "--no-progress"]) == 2
    assert "--root %s does not exist" % missing in error_line(capsys)
    (tmp_path / "leftImg8bit" / "train_extra").mkdir(parents=True)
    assert cli.main(["evaluate", "--model", files["city"], "--root", str(tmp_path), "--split",
                     "train_extra", "--no-progress"]) == 2
    line = error_line(capsys)
    assert "coarse" in line and "coarse=True" not in line, line


def test_a_report_written_again_keeps_only_its_own_pictures(files, tmp_path):
    report = tmp_path / "report"
    for worst in ("2", "1"):
        assert _evaluate(files["city"], files["city_rec"], "--report", str(report), "--worst",
                         worst) == 0
    pictures = sorted(os.listdir(report / "worst"))
    html = (report / "index.html").read_text()
    assert len(pictures) == 4 and all(p in html for p in pictures), pictures


def test_split_with_a_record_file_is_refused(files, capsys):
    assert _evaluate(files["city"], files["city_rec"], "--split", "train") == 2
    assert "--split" in error_line(capsys)


def test_the_records_split_is_reported(files, tmp_path):
    out = str(tmp_path / "m.json")
    assert _evaluate(files["city"], files["city_rec"], "--out-json", out) == 0
    assert json.load(open(out))["source"]["split"] == "val"  # the records name it
