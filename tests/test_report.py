"""HTML reports: an evaluation and a training run, rendered by headless Chromium; bad input."""
import hashlib
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest

import duc_hdc
from duc_hdc import cli, get_model
from duc_hdc.config import load_config
from duc_hdc.data import SegRecordDataset
from duc_hdc.data.datasets import convert_cityscapes
from duc_hdc.data.labels import colorize, get_table
from duc_hdc.evaluation import report
from duc_hdc.evaluation.evaluate import run_evaluation
from duc_hdc.evaluation.metrics import SegmentationMetric
from duc_hdc.inference.segmenter import Segmenter
from duc_hdc.models.sidecar import write_sidecar

from data_fixtures import H, W, block_labels, make_cityscapes, write_png

CHROMIUM = "/usr/bin/chromium"
WORST = 3


# ----------------------------------------------------------------------------- the browser
def _chromium(tmp_path, *args):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("%s is not installed: the report tests need a real browser; install "
                    "Debian's chromium (apt-get install -y chromium; .ci/run does it)" % CHROMIUM)
    profile = tmp_path / ("chromium-profile-%d" % len(os.listdir(tmp_path)))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--user-data-dir=%s" % profile,
               "--virtual-time-budget=10000"] + list(args)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def render(index, tmp_path):
    """Load ``index`` in headless Chromium: (the DOM after load, the screenshot as BGR)."""
    url = pathlib.Path(os.path.abspath(index)).as_uri()  # quoted: the path may hold "#"
    dom = _chromium(tmp_path, "--dump-dom", url)
    shot = str(tmp_path / (os.path.basename(os.path.dirname(index)) + "-screenshot.png"))
    _chromium(tmp_path, "--screenshot=%s" % shot, "--window-size=1280,2000", url)
    image = cv2.imread(shot)
    assert image is not None, "chromium wrote no screenshot %s" % shot
    return dom, image, shot


def check_page(index, tmp_path):
    """Every image on the page loaded with a nonzero natural size; the screenshot is not blank;
    nothing is fetched from the network. Returns the DOM's img tags and the screenshot path."""
    with open(index) as f:
        page = f.read()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "network resource"
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sources
    for src in sources:  # images are files beside the page
        assert os.path.getsize(os.path.join(os.path.dirname(index), src)) > 0, src
    dom, shot, path = render(index, tmp_path)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images="%d"' % len(sources) in body, body  # the page's script ran
    assert 'data-images-broken="0"' in body, body
    tags = re.findall(r"<img [^>]*>", dom)
    assert len(tags) == len(sources)
    for tag in tags:
        w, h = map(int, re.search(r'data-natural="(\d+)x(\d+)"', tag).groups())
        assert w > 0 and h > 0, tag
    assert shot.shape == (2000, 1280, 3)
    assert float(shot.reshape(-1, 3).astype(np.float64).var(axis=0).sum()) > 0  # not blank
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # text, figures and pictures
    return tags, path


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny evaluation (ResNet-18 at width 8, five 64x128 images) with its report."""
    root = tmp_path_factory.mktemp("report-eval")
    make_cityscapes(str(root / "cityscapes"), np.random.default_rng(3), counts={"val": 5})
    convert_cityscapes(str(root / "cityscapes"), "val", str(root / "val"), progress=False)
    net = get_model("duc_hdc_resnet18", classes=19, base_width=8)
    params = str(root / "tiny.params")
    net.save_parameters(params)
    write_sidecar(params, net.config)
    out = str(root / "report")
    metric, summary = run_evaluation(params=params, rec=str(root / "val.rec"), report_dir=out,
                                     worst=WORST, progress=False)
    return dict(root=root, params=params, rec=str(root / "val.rec"), net=net, metric=metric,
                summary=summary, out=out)


def test_evaluation_report_in_a_browser(evaluated, tmp_path):
    index = evaluated["summary"]["report"]
    assert index == os.path.join(evaluated["out"], "index.html")
    tags, shot = check_page(index, tmp_path)
    assert len(tags) == 2 + 4 * WORST  # bar chart, confusion matrix, 4 pictures per image
    with open(index) as f:
        page = f.read()
    for text in ("tiny.params", hashlib.sha256(open(evaluated["params"], "rb").read())
                 .hexdigest(), "cityscapes", "val.rec", "whole image", "mean IoU",
                 "pixel accuracy", "%.4f" % evaluated["metric"].mean_iou, "report.json"):
        assert text in page, text


def test_evaluation_report_numbers_are_the_evaluation(evaluated):
    """report.json against an independent recomputation from the data and the predictions."""
    with open(os.path.join(evaluated["out"], "report.json")) as f:
        doc = json.load(f)
    seg = Segmenter(evaluated["net"])
    dataset = SegRecordDataset(evaluated["rec"])
    confusion = np.zeros((19, 19), np.int64)
    per_image = []
    for i in range(len(dataset)):
        img, label = dataset[i]
        pred = seg.predict(img)
        valid = label != 255
        conf = np.bincount(label[valid].astype(np.int64) * 19 + pred[valid],
                           minlength=361).reshape(19, 19)
        confusion += conf
        union = conf.sum(0) + conf.sum(1) - np.diag(conf)
        per_image.append((np.diag(conf)[union > 0] / union[union > 0]).mean())
    assert doc["metrics"]["confusion"] == confusion.tolist()
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    assert doc["metrics"]["mean_iou"] == pytest.approx(
        (np.diag(confusion)[union > 0] / union[union > 0]).mean(), abs=1e-12)
    assert doc["metrics"]["pixel_accuracy"] == pytest.approx(
        np.trace(confusion) / confusion.sum(), abs=1e-12)
    np.testing.assert_allclose([p["mean_iou"] for p in doc["per_image"]], per_image, atol=1e-12)
    order = np.argsort(per_image, kind="stable")[:WORST]
    assert [w["index"] for w in doc["worst"]] == order.tolist()
    facts = doc["facts"]
    assert facts["weights_sha256"] == hashlib.sha256(open(evaluated["params"], "rb")
                                                     .read()).hexdigest()
    assert (facts["images"], facts["dataset"], facts["protocol"]) == (5, "cityscapes",
                                                                      "whole image")
    # the worst image's pictures: its ground truth in the palette, its errors in red and grey
    worst = doc["worst"][0]
    img, label = dataset[worst["index"]]
    pred = seg.predict(img)
    files = {k: os.path.join(evaluated["out"], v) for k, v in worst["files"].items()}
    np.testing.assert_array_equal(cv2.imread(files["image"])[:, :, ::-1], img)
    np.testing.assert_array_equal(cv2.imread(files["ground truth"])[:, :, ::-1],
                                  get_table("cityscapes").palette[label])
    np.testing.assert_array_equal(cv2.imread(files["prediction"])[:, :, ::-1],
                                  colorize(pred, "cityscapes"))
    errors = cv2.imread(files["errors"])[:, :, ::-1]
    wrong = (label != pred) & (label != 255)
    assert wrong.any() and (label == 255).any() and (~wrong & (label != 255)).any()
    assert (errors[wrong] == (230, 25, 25)).all()
    assert (errors[label == 255] == (150, 150, 150)).all()
    assert (errors[~wrong & (label != 255)] == 0).all()


def test_absent_classes_are_na_and_bars_take_the_palette(tmp_path):
    # VOC, 21 classes: the ground truth and predictions hold classes 0, 1 and 15 only
    label = np.array([[0, 0, 1, 1, 15, 255]] * 4, np.uint8)
    pred = np.array([[0, 1, 1, 1, 15, 15]] * 4, np.uint8)
    metric = SegmentationMetric(21)
    metric.update(label, pred)
    names = get_table("voc").names
    facts = report.evaluation_facts("hand-made", {}, None, "voc", "memory", "val",
                                    dict(mode="whole", scales=[1.0], flip=True), 1)
    assert facts["protocol"] == "whole image, with horizontal flip"
    index = report.write_evaluation_report(str(tmp_path / "r"), metric, facts, names, "voc")
    with open(tmp_path / "r" / "report.json") as f:
        iou = json.load(f)["metrics"]["class_iou"]
    # hand-worked: background 4/(8-... ) : gt 0 -> 8 px, 4 right; pred 0 -> 4 px
    assert iou["background"] == pytest.approx(4 / 8)
    assert iou["aeroplane"] == pytest.approx(8 / 12)
    assert iou["person"] == pytest.approx(4 / 4)
    assert [n for n, v in iou.items() if v is None] == [n for n in names
                                                        if n not in ("background", "aeroplane",
                                                                     "person")]
    page = open(index).read()
    assert page.count('<span class="na">n/a</span>') == 18
    bars = cv2.imread(str(tmp_path / "r" / "class_iou.png"))[:, :, ::-1].reshape(-1, 3)
    colors = {tuple(c) for c in np.unique(bars, axis=0)}
    for c in (1, 15):  # aeroplane (128, 0, 0), person (192, 128, 128)
        assert tuple(get_table("voc").colors[c]) in colors


def test_error_map_hand_worked():
    label = np.array([[0, 1, 255], [2, 2, 1]], np.uint8)
    pred = np.array([[0, 2, 0], [2, 1, 1]], np.uint8)
    out = report.error_map(label, pred)
    red, grey, black = (230, 25, 25), (150, 150, 150), (0, 0, 0)
    assert [[tuple(p) for p in row] for row in out] == [[black, red, grey], [black, red, black]]


def test_protocol_text():
    assert report.protocol_text(dict(mode="sliding", crop_size=[512, 1024], stride=[256, 512],
                                     scales=[0.75, 1.0, 1.25], flip=True)) == (
        "sliding window 512x1024, stride 256x512, scales 0.75, 1, 1.25, with horizontal flip")


# ------------------------------------------------------------------------------ a real run
@pytest.fixture(scope="module")
def run_dir(tiny_recs, tmp_path_factory):
    """A real tiny training run (8 iterations, 2 validations) and an evaluation of its weights."""
    root = tmp_path_factory.mktemp("report-run")
    recs = tiny_recs
    run = str(root / "run")
    cfg = load_config("synthetic", [
        "data.train_rec=%s" % recs["train"], "data.val_rec=%s" % recs["val"],
        "train.out_dir=%s" % run, "data.crop_size=[48,96]", "data.num_workers=0",
        "model.base_width=4", "model.aspp_rates=[1,2]", "train.batch_size_per_device=2",
        "train.epochs=2", "train.warmup_iters=2", "train.checkpoint_every_iters=3",
        "train.log_every_iters=1", "train.val_every_epochs=1"])
    duc_hdc.train(cfg, progress=False)
    # an evaluation report of the final weights, beside the run
    _, summary = run_evaluation(params=os.path.join(run, "final.params"), rec=recs["val"],
                                report_dir=str(root / "eval-report"), progress=False)
    return dict(run=run, eval_index=summary["report"])


def test_run_report_in_a_browser(run_dir, tmp_path):
    run = run_dir["run"]
    index = report.write_run_report(run)
    assert index == os.path.join(run, "report", "index.html")
    tags, shot = check_page(index, tmp_path)
    assert len(tags) == 3  # loss, learning rate, validation mIoU
    page = open(index).read()
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 2 and "Validation (2)" in page
    for r in val:
        assert "%.4f" % r["mean_iou"] in page
    # every checkpoint and the best/final weights, with iteration and sha256
    folder = os.path.join(run, "checkpoints")
    ckpts = sorted(f for f in os.listdir(folder) if f.startswith("ckpt-") and
                   f.endswith(".params"))
    assert ckpts
    for ckpt in ckpts:
        iteration = json.load(open(os.path.join(folder, ckpt[:-7] + ".json")))["iteration"]
        sha = hashlib.sha256(open(os.path.join(folder, ckpt), "rb").read()).hexdigest()
        assert re.search(r'%s</code></td><td class="num">%d</td><td class="num">\d+</td><td>'
                         r'<code>%s<' % (re.escape(ckpt), iteration, sha), page), ckpt
    for name in ("best.params", "final.params"):
        sha = hashlib.sha256(open(os.path.join(run, name), "rb").read()).hexdigest()
        assert re.search(r'%s</code></td><td class="num">\d+</td><td class="num">\d+</td><td>'
                         r'<code>%s<' % (re.escape(name), sha), page), name
    with open(os.path.join(run, "config.yaml")) as f:
        config = f.read()
    assert load_config(os.path.join(run, "config.yaml"))["data"]["train_rec"] in config
    assert html.escape(config) in page  # the resolved config (its paths as YAML writes them)
    # the evaluation of final.params, found by its sha256, linked relatively
    assert os.path.samefile(linked_evaluation(index), run_dir["eval_index"])
    # learning-rate rows: warm-up then poly, as the trainer logged them
    doc = json.load(open(os.path.join(run, "report", "report.json")))
    assert [r["lr"] for r in doc["train"]][:2] == [2e-3, 4e-3]



def linked_evaluation(index):
    """The file the run report's "Last evaluation" link opens in a browser (the href resolved
    against the page's file:// URL, as a URL: "#" starts a fragment, "%" an escape)."""
    with open(index) as f:
        page = f.read()
    href = html.unescape(re.search(r'<h2>Last evaluation</h2><p><a href="([^"]+)"',
                                   page).group(1))
    url = urllib.parse.urlsplit(urllib.parse.urljoin(pathlib.Path(index).as_uri(), href))
    assert url.scheme == "file" and not url.query and not url.fragment, href
    return urllib.request.url2pathname(url.path)


def test_run_report_links_an_evaluation_whose_folder_name_holds_url_characters(run_dir,
                                                                               tmp_path):
    """A folder named "eval #2 50%" made a link to "../eval #2 50%/index.html", which a
    browser reads as "../eval " plus a fragment: the href is URL-quoted now."""
    other = tmp_path / "eval #2 50%"
    shutil.copytree(os.path.dirname(run_dir["eval_index"]), str(other))
    index = report.write_run_report(run_dir["run"], out_dir=str(tmp_path / "run report"),
                                    eval_report=str(other))
    assert os.path.samefile(linked_evaluation(index), str(other / "index.html"))


# ------------------------------------------------------------------------------ bad input
def _one_line(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_unwritable_report_dir_is_named_before_evaluating(evaluated, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "report"
    with pytest.raises(OSError) as excinfo:
        run_evaluation(params=str(tmp_path / "missing.params"), rec=evaluated["rec"],
                       report_dir=str(target), progress=False)
    assert isinstance(excinfo.value, report.ReportDirError)  # before the model was loaded
    assert "cannot write the report to" in _one_line(excinfo, target)
    with pytest.raises(report.ReportDirError) as excinfo:
        report.prepare_report_dir(str(target))
    _one_line(excinfo, target)


def test_evaluation_without_labelled_pixels_is_named(evaluated, tmp_path):
    root = tmp_path / "unlabelled"
    rng = np.random.default_rng(0)
    for i in range(2):  # labelIds 0..6 are all void: every trainId is 255
        stem = "ulm_%06d_000019" % i
        write_png(str(root / "leftImg8bit" / "val" / "ulm" / (stem + "_leftImg8bit.png")),
                  rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        write_png(str(root / "gtFine" / "val" / "ulm" / (stem + "_gtFine_labelIds.png")),
                  block_labels(rng, range(7)))
    convert_cityscapes(str(root), "val", str(tmp_path / "unlabelled"), progress=False)
    rec = str(tmp_path / "unlabelled.rec")
    with pytest.raises(ValueError) as excinfo:
        run_evaluation(params=evaluated["params"], rec=rec, report_dir=str(tmp_path / "r"),
                       progress=False)
    assert "none of the 2 evaluated image(s) has a labelled pixel" in _one_line(excinfo, rec)
    assert not os.path.exists(tmp_path / "r" / "index.html")
    with pytest.raises(report.ReportError) as excinfo:
        report.write_evaluation_report(
            str(tmp_path / "r"), SegmentationMetric(19),
            report.evaluation_facts("m", {}, None, "cityscapes", rec, None, {}, 0),
            get_table("cityscapes").names, "cityscapes")
    _one_line(excinfo, rec)


def test_run_dir_without_metrics_is_named(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(report.ReportError) as excinfo:
        report.write_run_report(str(tmp_path))
    assert "no such file" in _one_line(excinfo, tmp_path / "metrics.jsonl")
    assert not os.path.exists(tmp_path / "report")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "iteration": 1, "loss": 1.0}\n'
                                          '{oops\n')
    with pytest.raises(report.ReportError) as excinfo:
        report.write_run_report(str(tmp_path))
    assert "line 2 is not JSON" in _one_line(excinfo, tmp_path / "metrics.jsonl")


def test_cli_evaluate_report_and_run_report(evaluated, run_dir, tmp_path, capsys):
    """The commands: evaluate --report DIR --worst N, and report RUN_DIR --out DIR."""
    out = str(tmp_path / "cli-report")
    rc = cli.main(["evaluate", "--model", evaluated["params"], "--rec", evaluated["rec"],
                   "--report", out, "--worst", "2", "--limit", "3", "--no-progress"])
    assert rc == 0
    assert "report: %s" % os.path.join(out, "index.html") in capsys.readouterr().out
    with open(os.path.join(out, "report.json")) as f:
        doc = json.load(f)
    assert doc["facts"]["images"] == 3 and len(doc["per_image"]) == 3 and len(doc["worst"]) == 2
    rc = cli.main(["report", run_dir["run"], "--out", str(tmp_path / "run-report")])
    assert rc == 0
    assert os.path.isfile(str(tmp_path / "run-report" / "index.html"))
    rc = cli.main(["report", str(tmp_path / "no-run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no-run" in err


def test_run_report_refuses_an_evaluation_report_that_is_not_there(run_dir, tmp_path, capsys):
    """report --eval-report nope.html wrote a dead link before."""
    out = str(tmp_path / "rr")
    rc = cli.main(["report", run_dir["run"], "--out", out, "--eval-report",
                   str(tmp_path / "nope.html")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nope.html" in err and "--report DIR" in err
    assert not os.path.exists(out)


def test_run_report_of_a_run_killed_mid_row_leaves_that_row_out(run_dir, tmp_path, caplog):
    """A run killed while appending to metrics.jsonl leaves its last line cut short; report
    refused the whole run ("line N is not JSON") until a --resume repaired it."""
    run = str(tmp_path / "killed")
    shutil.copytree(run_dir["run"], run)
    metrics = os.path.join(run, "metrics.jsonl")
    with open(metrics) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(metrics, "a") as f:
        f.write('{"kind": "train", "iteration": 9, "lo')  # no newline: cut by the kill
    with caplog.at_level("WARNING"):
        index = report.write_run_report(run)
    assert os.path.isfile(index)
    assert "its last line was cut short" in caplog.text and metrics in caplog.text
    assert report._read_rows(metrics) == rows  # the rows before it, all of them
