"""HTML reports: one evaluation (``duc-hdc evaluate --report DIR``) and one training run
(``duc-hdc report RUN_DIR``).

Each report is a folder: ``index.html`` (from the template ``report.html`` beside this module),
its figures and images as PNG files, and ``report.json`` with the numbers the page shows. The
page needs no network. Figures are drawn with matplotlib (Agg); every file is written atomically
(:mod:`duc_hdc.fileio`).
"""
import datetime
import glob
import html
import io
import json
import logging
import math
import os
import re
import string
import urllib.request

import numpy as np

from ..data.labels import IGNORE_LABEL, colorize, get_table
from ..fileio import atomic_json, atomic_write, read_jsonl, sha256sum
from ..training.runlog import metrics_row_problem

__all__ = ["ReportError", "ReportDirError", "prepare_report_dir", "protocol_text",
           "evaluation_facts", "error_map", "write_evaluation_report", "write_run_report"]

log = logging.getLogger(__name__)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.html")
#: the longest side of the worst-image pictures on the page (larger images are shrunk)
MAX_PICTURE_WIDTH = 1024
ERROR_COLORS = dict(correct=(0, 0, 0), wrong=(230, 25, 25), ignored=(150, 150, 150))


class ReportError(ValueError):
    """The input of a report is missing or unusable; the message names the path."""


class ReportDirError(OSError):
    """The report folder cannot be written; the message names it."""


# ------------------------------------------------------------------------------------ files
def prepare_report_dir(path):
    """Create ``path`` and check that a file can be written there (before any long work)."""
    probe = os.path.join(path, ".write-test")
    try:
        os.makedirs(path, exist_ok=True)
        with atomic_write(probe) as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ReportDirError("cannot write the report to %s: %s" % (path, e.strerror or e)) \
            from None
    return path


def _write_png(path, rgb):
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
    if not ok:
        raise ReportDirError("could not encode %s" % path)
    with atomic_write(path, "wb") as f:
        f.write(buf.tobytes())
    return path


def _save_figure(fig, path):
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _render(out_dir, title, subtitle, body, footer):
    with open(TEMPLATE) as f:
        template = string.Template(f.read())
    page = template.substitute(title=html.escape(title), subtitle=html.escape(subtitle),
                               body=body, footer=html.escape(footer))
    index = os.path.join(out_dir, "index.html")
    with atomic_write(index) as f:
        f.write(page)
    return index


def _e(value):
    return html.escape(str(value))


def _facts_table(rows):
    cells = "".join("<tr><th>%s</th><td>%s</td></tr>" % (_e(k), v) for k, v in rows)
    return "<table>%s</table>" % cells


def _grid(headers, rows):
    """A table of HTML cells; headers starting with '#' are right-aligned numbers."""
    cls = ['' if h[0] != "#" else ' class="num"' for h in headers]
    head = "".join("<th%s>%s</th>" % (c, _e(h.lstrip("#"))) for c, h in zip(cls, headers))
    body = "".join("<tr>%s</tr>" % "".join("<td%s>%s</td>" % (c, v) for c, v in zip(cls, row))
                   for row in rows)
    return '<table class="grid"><tr>%s</tr>%s</table>' % (head, body)


def _section(title, content):
    return "<section><h2>%s</h2>%s</section>" % (_e(title), content)


def _fmt(value, digits=4):
    """A float with ``digits`` decimals, other values as text; None and NaN as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="na">n/a</span>'
    return "%.*f" % (digits, value) if isinstance(value, float) else _e(value)


def _img(src, alt, cls="figure"):
    return '<img class="%s" src="%s" alt="%s">' % (cls, _e(src), _e(alt))


# ------------------------------------------------------------------------------ evaluation
def protocol_text(settings):
    """One line for the inference settings (:attr:`Segmenter.settings`)."""
    if settings.get("mode") == "sliding":
        text = "sliding window %s, stride %s" % ("x".join(map(str, settings["crop_size"])),
                                                 "x".join(map(str, settings["stride"])))
    else:
        text = "whole image"
    scales = [float(s) for s in settings.get("scales") or [1.0]]
    if scales != [1.0]:
        text += ", scales %s" % ", ".join("%g" % s for s in scales)
    if settings.get("flip"):
        text += ", with horizontal flip"
    return text


def evaluation_facts(model, model_config, weights, dataset, data, split, inference, images):
    """The facts an evaluation report shows; ``weights`` (a file or None) gets its sha256."""
    return dict(model=None if model is None else str(model), model_config=dict(model_config),
                weights=weights, weights_sha256=sha256sum(weights) if weights else None,
                dataset=dataset, data=data, split=split, inference=dict(inference),
                protocol=protocol_text(inference), images=int(images), date=_now())


def error_map(label, pred, ignore_label=IGNORE_LABEL):
    """RGB map of an image's errors: wrong pixels red, ignored pixels grey, correct black."""
    label, pred = np.asarray(label), np.asarray(pred)
    out = np.empty(label.shape + (3,), np.uint8)
    out[...] = ERROR_COLORS["correct"]
    out[label != pred] = ERROR_COLORS["wrong"]
    out[label == ignore_label] = ERROR_COLORS["ignored"]
    return out


def _shrink(rgb, nearest):
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= MAX_PICTURE_WIDTH:
        return rgb
    f = MAX_PICTURE_WIDTH / float(max(h, w))
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _class_iou_figure(path, names, iou, colors):
    plt = _pyplot()
    k = len(names)
    fig, ax = plt.subplots(figsize=(8, 0.32 * k + 1.1))
    y = np.arange(k)
    values = np.nan_to_num(iou, nan=0.0)
    ax.barh(y, values, color=[np.asarray(c) / 255.0 for c in colors], edgecolor="#333",
            linewidth=0.6)
    for i, v in enumerate(iou):
        if math.isnan(v):
            ax.text(0.01, i, "n/a (absent)", va="center", fontsize=8, color="#888",
                    style="italic")
        else:
            ax.text(v + 0.01, i, "%.3f" % v, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def _confusion_figure(path, names, confusion, outside):
    plt = _pyplot()
    k = len(names)
    rows = confusion.sum(axis=1) + outside
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = confusion / rows[:, None].astype(np.float64)
    norm[rows == 0] = np.nan
    side = min(12.0, 0.42 * k + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("#e0e0e0")
    image = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, vmin=0.0, vmax=1.0)
    if k <= 25:
        for g in range(k):
            for p in range(k):
                v = norm[g, p]
                if not math.isnan(v) and v >= 0.005:
                    ax.text(p, g, "%.2f" % v, ha="center", va="center", fontsize=6,
                            color="white" if v > 0.5 else "#222")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(["%s (n/a)" % n if r == 0 else n for n, r in zip(names, rows)],
                       fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row's pixels")
    fig.tight_layout()
    return _save_figure(fig, path)


def _worst_section(out_dir, worst, dataset_name, ignore_label):
    folder = os.path.join(out_dir, "worst")
    if os.path.isdir(folder):  # an earlier report's pictures: this one shows other images
        for name in os.listdir(folder):
            if name.endswith(".png"):
                os.remove(os.path.join(folder, name))
    if not worst:
        return "<p>No image to show.</p>", []
    entries, blocks = [], []
    for rank, item in enumerate(worst):
        stem = "%02d_%s" % (rank, re.sub(r"[^\w.-]+", "_", item["name"]))
        pictures = [("image", _shrink(np.asarray(item["image"], np.uint8), False)),
                    ("ground truth", _shrink(colorize(item["label"], dataset_name), True)),
                    ("prediction", _shrink(colorize(item["pred"], dataset_name), True)),
                    ("errors", _shrink(error_map(item["label"], item["pred"], ignore_label),
                                       True))]
        files = {}
        cells = []
        for what, rgb in pictures:
            rel = "worst/%s_%s.png" % (stem, what.replace(" ", "_"))
            _write_png(os.path.join(out_dir, rel), rgb)
            files[what] = rel
            cells.append("<figure>%s<figcaption>%s</figcaption></figure>"
                         % (_img(rel, "%s: %s" % (item["name"], what), "picture"), _e(what)))
        entries.append(dict({k: item[k] for k in ("index", "name", "mean_iou", "pixel_accuracy",
                                                  "pixels")}, files=files))
        blocks.append('<p class="caption"><b>%d. %s</b> (item %d): mIoU %s, pixel accuracy %s'
                      '</p><div class="worst">%s</div>'
                      % (rank + 1, _e(item["name"]), item["index"], _fmt(item["mean_iou"]),
                         _fmt(item["pixel_accuracy"]), "".join(cells)))
    legend = ('<p class="legend">Error map: <span style="color:#e61919">&#9632; wrong</span>'
              '<span style="color:#969696">&#9632; ignored (ground truth %d)</span>'
              '<span>&#9632; correct</span></p>' % ignore_label)
    return legend + "".join(blocks), entries


def write_evaluation_report(out_dir, metric, facts, names, dataset_name, worst=None):
    """Write ``out_dir/index.html``, its figures and ``report.json`` for one evaluation.

    Parameters
    ----------
    out_dir : str
    metric : SegmentationMetric
        The whole evaluation's counts.
    facts : dict
        :func:`evaluation_facts`.
    names : list of str
        Class names (one per class).
    dataset_name : str
        Palette for the bars and the label maps.
    worst : duc_hdc.evaluation.metrics.WorstImages, optional
        Per-image scores and the worst images.

    Returns
    -------
    str
        The path of index.html.

    Raises
    ------
    ReportError
        The metric holds no labelled pixel.
    ReportDirError
        ``out_dir`` cannot be written.
    """
    if metric.num_pixels == 0:
        raise ReportError("%s: no labelled pixel in the %d evaluated image(s); an evaluation "
                          "report needs ground truth" % (facts.get("data"), facts["images"]))
    prepare_report_dir(out_dir)
    table = get_table(dataset_name)
    colors = table.colors if table.num_classes == metric.num_classes else \
        [tuple(int(v) for v in table.palette[c]) for c in range(metric.num_classes)]
    iou = metric.iou
    pixel_accuracy, mean_iou = metric.get()
    _class_iou_figure(os.path.join(out_dir, "class_iou.png"), names, iou, colors)
    _confusion_figure(os.path.join(out_dir, "confusion.png"), names, metric.confusion,
                      metric.outside)
    worst_list = worst.worst() if worst is not None else []
    worst_html, worst_entries = _worst_section(out_dir, worst_list, dataset_name,
                                               metric.ignore_label)
    doc = dict(kind="evaluation", facts=facts, metrics=metric.to_dict(names),
               per_image=list(worst.per_image) if worst is not None else [],
               worst=worst_entries)
    atomic_json(os.path.join(out_dir, "report.json"), doc)

    cfg = facts.get("model_config") or {}
    settings = ", ".join("%s=%s" % (k, cfg[k]) for k in ("depth", "classes", "cell_width",
                                                         "dilations", "head") if k in cfg)
    facts_rows = [
        ("model", "%s<br><small>%s</small>" % (_e(facts.get("model")), _e(settings))),
        ("weights", "<code>%s</code>" % _e(facts.get("weights") or "n/a")),
        ("weights sha256", "<code>%s</code>" % _e(facts.get("weights_sha256") or "n/a")),
        ("dataset", _e(facts["dataset"])),
        ("data", "<code>%s</code>" % _e(facts.get("data"))),
        ("split", _e(facts.get("split") or "(the RecordIO file)")),
        ("protocol", _e(facts["protocol"])),
        ("images", _e(facts["images"])),
        ("date", _e(facts["date"]))]
    present = int((~np.isnan(iou)).sum())
    swatches = _grid(["class", "#IoU", "#gt pixels"], [
        ('<span class="swatch" style="background:rgb(%d,%d,%d)"></span>%s' % (c + (_e(n),)),
         _fmt(v), _e(g)) for n, v, c, g in zip(names, iou, colors, metric.confusion.sum(axis=1)
                                                + metric.outside)])
    body = "".join([
        _section("Run", _facts_table(facts_rows)),
        _section("Scores", '<div class="headline"><div>mean IoU<b>%s</b>over %d of %d classes '
                 '(n/a = absent from the ground truth and never predicted: not counted)</div>'
                 '<div>pixel accuracy<b>%s</b>%d labelled pixels</div></div>'
                 % (_fmt(mean_iou), present, metric.num_classes, _fmt(pixel_accuracy),
                    metric.num_pixels)),
        _section("Per-class IoU", "<figure>%s</figure><details><summary>table</summary>%s"
                 "</details>" % (_img("class_iou.png", "per-class IoU"), swatches)),
        _section("Confusion matrix (rows normalized: where each class's pixels went)",
                 "<figure>%s</figure>" % _img("confusion.png", "confusion matrix")),
        _section("The %d worst images by per-image mIoU" % len(worst_entries), worst_html),
        _section("Numbers", '<p>All of them, per image too: <a href="report.json">report.json'
                 '</a></p>')])
    index = _render(out_dir, "Evaluation: %s on %s" % (facts.get("model"), facts["dataset"]),
                    "mIoU %.4f, pixel accuracy %.4f, %d images, %s"
                    % (mean_iou, pixel_accuracy, facts["images"], facts["protocol"]),
                    body, "duc-hdc evaluation report, %s" % facts["date"])
    log.info("evaluation report: %s", index)
    return index


# ------------------------------------------------------------------------------ training run
def _read_rows(path):
    if not os.path.isfile(path):
        run_dir = os.path.dirname(path)
        if glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.json")) or any(
                os.path.isfile(os.path.join(run_dir, n)) for n in ("final.params", "best.params")):
            return None  # a run that logged no iteration (an older duc-hdc: shorter than its
            #              train.log_every_iters; or stopped before its first row)
        raise ReportError("%s: no such file; a training run directory holds metrics.jsonl "
                          "(give the train.out_dir of a run)" % path)
    try:
        rows, cut = read_jsonl(path, metrics_row_problem)
    except ValueError as e:
        raise ReportError(str(e)) from None
    if cut:
        log.warning("%s: its last line was cut short (the run was stopped while writing it); "
                    "left out (duc-hdc train --resume drops it)", path)
    return rows


def _curve_figure(path, xs, ys, xlabel, ylabel, log_y=False, style="-", ylim=None):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    ax.plot(xs, ys, style, color="#1565c0")
    if style != "-":
        for x, y in zip(xs, ys):
            ax.annotate("%.3f" % y, (x, y), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y and min(ys) > 0 and max(ys) > 10 * min(ys):
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def _weights_rows(run_dir):
    out = []
    stems = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.json")))
    for side in stems:
        with open(side) as f:
            doc = json.load(f)
        params = side[:-len(".json")] + ".params"
        out.append(dict(file=os.path.relpath(params, run_dir), iteration=doc.get("iteration"),
                        epoch=doc.get("epoch"),
                        sha256=sha256sum(params) if os.path.isfile(params) else None))
    for name in ("best", "final"):
        params = os.path.join(run_dir, name + ".params")
        if os.path.isfile(params):
            meta = {}
            if os.path.isfile(os.path.join(run_dir, name + ".json")):
                with open(os.path.join(run_dir, name + ".json")) as f:
                    meta = json.load(f)
            sha = sha256sum(params)
            # best.json records its validation; final.params is the last checkpoint's weights
            where = meta.get("metric") or next((w for w in out if w["sha256"] == sha), {})
            out.append(dict(file=name + ".params", iteration=where.get("iteration"),
                            epoch=where.get("epoch"), sha256=sha))
    return out


def _find_evaluation(run_dir, hashes):
    """The newest evaluation report (report.json, kind evaluation) of this run's weights, looked
    for in and beside the run directory (two levels deep)."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    found = []
    for base in (run_dir, parent):
        for pattern in ("*/report.json", "*/*/report.json"):
            for path in glob.glob(os.path.join(base, pattern)):
                try:
                    with open(path) as f:
                        doc = json.load(f)
                except (OSError, ValueError):
                    continue
                if isinstance(doc, dict) and doc.get("kind") == "evaluation" and \
                        (doc.get("facts") or {}).get("weights_sha256") in hashes:
                    found.append((doc["facts"].get("date", ""), os.path.dirname(path)))
    return max(found)[1] if found else None


def _report_index(report):
    """The index.html of a report given as its folder or its index.html."""
    return report if report.endswith(".html") else os.path.join(report, "index.html")


def write_run_report(run_dir, out_dir=None, eval_report=None):
    """Write ``run_dir/report/index.html`` (or ``out_dir``) for a training run.

    Shows the loss and learning-rate curves per iteration, the validation mIoU per validation,
    the resolved config, the checkpoints and best/final weights with iteration and sha256, and a
    link to the newest evaluation report of the run's weights (``eval_report``, a report folder
    or its index.html, else found by the weights' sha256 in or beside ``run_dir``).

    A run without metrics.jsonl (weights but no logged iteration) gets a report that says so.

    Raises
    ------
    ReportError
        ``run_dir`` has neither metrics.jsonl nor weights, or an unreadable metrics.jsonl;
        ``eval_report`` holds no report.
    ReportDirError
        The report folder cannot be written.
    """
    if eval_report is not None:
        target = _report_index(eval_report)
        if not os.path.isfile(target):  # checked first: a dead link was written before
            raise ReportError("--eval-report %s: no evaluation report there (%s is missing); "
                              "give the folder `duc-hdc evaluate --report DIR` wrote, or its "
                              "index.html" % (eval_report, target))
    rows = _read_rows(os.path.join(run_dir, "metrics.jsonl"))
    logged = rows is not None
    rows = rows or []
    out_dir = out_dir or os.path.join(run_dir, "report")
    prepare_report_dir(out_dir)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    figures = {}
    if train:
        figures["loss"] = _curve_figure(os.path.join(out_dir, "loss.png"),
                                        [r["iteration"] for r in train],
                                        [r["loss"] for r in train], "iteration",
                                        "training loss (running mean)", log_y=True)
        with_lr = [r for r in train if "lr" in r]
        if with_lr:
            figures["lr"] = _curve_figure(os.path.join(out_dir, "lr.png"),
                                          [r["iteration"] for r in with_lr],
                                          [r["lr"] for r in with_lr], "iteration",
                                          "learning rate")
    if val:
        figures["val"] = _curve_figure(os.path.join(out_dir, "val_miou.png"),
                                       [r["iteration"] for r in val],
                                       [r["mean_iou"] for r in val], "iteration",
                                       "validation mIoU", style="o-", ylim=(0, 1))
    weights = _weights_rows(run_dir)
    if eval_report is None:
        eval_report = _find_evaluation(run_dir, {w["sha256"] for w in weights if w["sha256"]})
    link = None
    if eval_report:
        link = os.path.relpath(os.path.abspath(_report_index(eval_report)),
                               os.path.abspath(out_dir))
    config_path = os.path.join(run_dir, "config.yaml")
    config = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = f.read()
    best = max(val, key=lambda r: r.get("mean_iou") or -1.0) if val else None
    iterations = max([r.get("iteration") or 0 for r in rows] +
                     [w["iteration"] or 0 for w in weights])
    facts = [("run", "<code>%s</code>" % _e(os.path.abspath(run_dir))),
             ("iterations", _e(iterations)),
             ("epochs", _fmt(max([r.get("epoch") or 0 for r in rows]) if rows else None)),
             ("best validation mIoU", "%s at iteration %s" % (_fmt(best["mean_iou"]),
                                                              _e(best["iteration"]))
              if best else _fmt(None)),
             ("date", _e(_now()))]
    curves = "".join(_img(os.path.basename(figures[k]), k) for k in ("loss", "lr")
                     if k in figures) or ("<p>No training row in metrics.jsonl.</p>" if logged
                                          else "<p>No logged iterations: the run has no "
                                               "metrics.jsonl.</p>")
    body = "".join([
        _section("Run", _facts_table(facts)),
        _section("Training curves (%d logged iterations)" % len(train),
                 '<div class="row">%s</div>' % curves),
        _section("Validation (%d)" % len(val),
                 (_img("val_miou.png", "validation mIoU") if val else "<p>No validation ran.</p>")
                 + _grid(["#iteration", "#epoch", "#mIoU", "#pixel accuracy"],
                         [(_fmt(r.get("iteration")), _fmt(r.get("epoch")),
                           _fmt(r.get("mean_iou")), _fmt(r.get("pixel_accuracy")))
                          for r in val])),
        _section("Checkpoints and weights", _grid(
            ["file", "#iteration", "#epoch", "sha256"],
            [("<code>%s</code>" % _e(w["file"]), _fmt(w["iteration"]), _fmt(w["epoch"]),
              "<code>%s</code>" % _e(w["sha256"] or "missing")) for w in weights])),
        # the href URL-quoted: a folder named "eval #2" would read as "eval " and a fragment
        _section("Last evaluation", '<p><a href="%s">%s</a></p>'
                 % (_e(urllib.request.pathname2url(link)), _e(link)) if link
                 else "<p>No evaluation report of this run's weights found.</p>"),
        _section("Resolved config", "<pre>%s</pre>" % _e(config) if config else
                 "<p>%s: not found.</p>" % _e(config_path))])
    atomic_json(os.path.join(out_dir, "report.json"),
                dict(kind="run", run_dir=os.path.abspath(run_dir), train=train, val=val,
                     weights=weights, evaluation=link, config=config, date=_now()))
    name = os.path.basename(os.path.abspath(run_dir))
    index = _render(out_dir, "Training run: %s" % name,
                    "%d logged iterations, %d validations" % (len(train), len(val)), body,
                    "duc-hdc run report, %s" % _now())
    log.info("run report: %s", index)
    return index
