"""Data commands as a new user runs them: two conversions into one --out, synthetic scenes into a
dataset folder, file names that are no UTF-8, a metrics.jsonl with hand-made rows."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from duc_hdc import cli
from duc_hdc.data import SegRecordDataset
from duc_hdc.demo.synthetic import make_synthetic_cityscapes

from run_helpers import error_line, snapshot


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("datamistakes") / "cityscapes"
    make_synthetic_cityscapes(str(root), num_train=3, num_val=1, size=(32, 64), seed=3,
                              progress=False)
    return root


def _convert(root, out, *extra):
    return cli.main(["data", "cityscapes", "--root", str(root), "--split", "train", "--out",
                     str(out), "--no-progress"] + list(extra))


HOLD = r"""
import sys, time
from duc_hdc.data.recordio import RecordWriter
with RecordWriter(sys.argv[1]):
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_second_conversion_into_a_prefix_being_written_is_refused(city, tmp_path, capsys):
    out = tmp_path / "rec" / "train"
    assert _convert(city, out) == 0
    before = snapshot(tmp_path / "rec")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "writing"
        parts = sorted(os.listdir(tmp_path / "rec"))
        capsys.readouterr()
        assert _convert(city, out) == 2
        line = error_line(capsys)
        assert str(out) in line and "pid %d" % holder.pid in line, line
        assert sorted(os.listdir(tmp_path / "rec")) == parts  # its .part files untouched
    finally:
        holder.kill()
        holder.wait()
    # the holder killed: its .part files stay until the next conversion, which works
    assert _convert(city, out) == 0
    assert len(SegRecordDataset(str(out) + ".rec")) == 3
    assert sorted(os.listdir(tmp_path / "rec")) == sorted(before)


def test_synthetic_scenes_are_not_written_into_a_dataset(city, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(city, root)
    before = snapshot(root)
    assert cli.main(["data", "synthetic", "--out", str(root), "--train", "1", "--val", "1",
                     "--size", "32,64", "--no-progress"]) == 2
    line = error_line(capsys)
    assert str(root) in line and "leftImg8bit/" in line, line
    assert snapshot(root) == before


def test_file_names_that_are_no_utf8_convert(city, tmp_path):
    root = tmp_path / "odd"
    shutil.copytree(city, root)
    for top in ("leftImg8bit", "gtFine"):
        split = os.path.join(os.fsencode(str(root)), top.encode(), b"train")
        for city_dir in os.listdir(split):
            os.rename(os.path.join(split, city_dir), os.path.join(split, b"z\xfc" + city_dir))
    out = tmp_path / "rec" / "odd"
    assert _convert(root, out) == 0
    assert len(SegRecordDataset(str(out) + ".rec")) == 3
    lst = open(str(out) + ".lst", "rb").read()
    assert lst.count(b"z\xfc") == 3 * 2  # image and label: the names as the file system has them


@pytest.mark.parametrize("row, words", [
    ("[1, 2]", "expected a JSON object"),
    ('{"kind": "train", "iteration": "abc", "loss": 1.0}', "iteration is 'abc'"),
    ('{"kind": "val", "iteration": 4, "mean_iou": "x"}', "mean_iou is 'x'"),
])
def test_a_hand_made_metrics_row_is_named_by_its_line(tmp_path, capsys, row, words):
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps(dict(kind="train", iteration=1, epoch=0, loss=2.0, lr=0.1,
                           samples_per_sec=1.0))
    (run / "metrics.jsonl").write_text(good + "\n" + row + "\n")
    assert cli.main(["report", str(run)]) == 2
    line = error_line(capsys)
    assert "metrics.jsonl line 2" in line and words in line, line


def test_out_given_as_a_file_name_or_a_folder_writes_the_prefix(city, tmp_path, capsys):
    assert _convert(city, tmp_path / "a" / "train.rec") == 0
    assert sorted(os.listdir(tmp_path / "a")) == ["train.idx", "train.lst", "train.rec"]
    assert _convert(city, str(tmp_path / "b") + "/") == 0
    assert sorted(os.listdir(tmp_path / "b")) == ["train.idx", "train.lst", "train.rec"]
    # and a reader given the index, the listing or the folder names what to give
    from duc_hdc.data.recordio import RecordFileError

    for wrong, words in (("a/train.idx", "give %s" % (tmp_path / "a" / "train.rec")),
                         ("a/train.lst", "give %s" % (tmp_path / "a" / "train.rec")),
                         ("a", "is a folder")):
        with pytest.raises(RecordFileError) as e:
            SegRecordDataset(str(tmp_path / wrong))
        assert words in str(e.value), str(e.value)


def test_quality_out_of_range_is_one_short_line(city, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _convert(city, tmp_path / "q", "--encoding", "jpg", "--quality", "0")
    err = capsys.readouterr().err
    assert "from 1 to 100" in err and "99" not in err, err


def test_files_the_layout_leaves_out_are_named(city, tmp_path, caplog):
    from duc_hdc.data.sources import cityscapes_samples

    root = tmp_path / "extra"
    shutil.copytree(city, root)
    train = root / "leftImg8bit" / "train"
    town = sorted(os.listdir(train))[0]
    first = sorted(os.listdir(train / town))[0]
    # an upper-cased extension is an image like the others
    shutil.copy(train / town / first, train / town / "upper_000000_000001_leftImg8bit.PNG")
    shutil.copy(root / "gtFine" / "train" / town / first.replace(
        "_leftImg8bit.png", "_gtFine_labelIds.png"),
        root / "gtFine" / "train" / town / "upper_000000_000001_gtFine_labelIds.png")
    # a nested folder and a label without its image are left out, and said
    (train / town / "nested").mkdir()
    shutil.copy(train / town / first, train / town / "nested" / first)
    orphan = root / "gtFine" / "train" / town / "lost_000000_000009_gtFine_labelIds.png"
    shutil.copy(root / "gtFine" / "train" / town / first.replace(
        "_leftImg8bit.png", "_gtFine_labelIds.png"), orphan)
    with caplog.at_level("WARNING"):
        samples = cityscapes_samples(str(root), "train")
    assert len(samples) == 4
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(train / town / "nested" / first) in warned, warned
    assert str(orphan) in warned and "without an image" in warned, warned


def test_synthetic_ground_truth_passes_cityscapes_scripts_as_it_runs_by_default(city, tmp_path):
    """cityscapesScripts' evaluation reads *_gtFine_instanceIds.png too (its instance-level
    scores are on by default): the synthetic data has them, so the script runs as shipped."""
    import copy

    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    gt = sorted(os.path.join(d, f) for d, _, fs in os.walk(str(city / "gtFine"))
                for f in fs if f.endswith("_gtFine_labelIds.png"))
    assert all(os.path.isfile(p.replace("_labelIds", "_instanceIds")) for p in gt)
    preds = []
    for path in gt:  # the ground truth as the prediction: every score is 1
        pred = str(tmp_path / os.path.basename(path).replace("_gtFine_labelIds", "_pred"))
        shutil.copy(path, pred)
        preds.append(pred)
    args = copy.copy(official.args)
    args.cityscapesPath = str(city)
    args.quiet = True
    args.JSONOutput = False
    args.exportFile = str(tmp_path / "official.json")
    args.evalLabels = []
    result = official.evaluateImgLists(preds, gt, args)
    assert result["averageScoreClasses"] == pytest.approx(1.0)
    assert "averageScoreInstClasses" in result  # computed (nan: no object instances)


def test_options_that_would_do_nothing_are_named(city, tmp_path, capsys):
    assert _convert(city, tmp_path / "q", "--quality", "50") == 2
    assert "--encoding jpg" in error_line(capsys)
    assert cli.main(["data", "synthetic", "--out", str(tmp_path / "s"), "--train", "0", "--val",
                     "0", "--no-progress"]) == 2
    assert "nothing to write" in error_line(capsys)
    assert not os.path.exists(tmp_path / "s")


def test_a_broken_recipe_is_named_on_one_line_with_its_place(tmp_path):
    from duc_hdc.config import ConfigError, load_config

    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: x\nmodel: {name: duc_hdc_resnet18\ndata: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(recipe))
    message = str(e.value)
    assert "\n" not in message and str(recipe) in message and "line " in message, message


def test_a_folder_dataset_is_named_by_its_folder_not_its_class(city, tmp_path):
    from duc_hdc.evaluation.evaluate import evaluate
    from duc_hdc.data.datasets import CityscapesFolder

    class Any(object):
        classes = 19

        def predict(self, rgb):
            return rgb[:, :, 0] * 0

    dataset = CityscapesFolder(str(city), "train")
    dataset.samples[1] = dataset.samples[1]._replace(label_path=None, label_kind=None)
    with pytest.raises(ValueError) as e:
        evaluate(Any(), dataset, 19, progress=False)
    message = str(e.value)
    assert "CityscapesFolder" not in message and "%s (split train) item 1" % city in message, \
        message
