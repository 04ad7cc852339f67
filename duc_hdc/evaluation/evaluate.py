"""Evaluation: run a :class:`~duc_hdc.inference.segmenter.Segmenter` over a labelled dataset.

Metrics follow the official Cityscapes evaluation (see :mod:`duc_hdc.evaluation.metrics`). With
``save_dir`` the predictions are also written in the formats the official tools take:

``save_dir/labelIds/<name>_labelIds.png``
    Cityscapes: the predicted trainIds mapped to labelIds, one 8-bit PNG per image, named after
    the record (``<city>_<seq>_<frame>``), as ``evalPixelLevelSemanticLabeling`` and the
    Cityscapes test server expect (point ``CITYSCAPES_RESULTS`` there, or zip the folder).
``save_dir/trainIds/<name>_trainIds.png``
    Other datasets: the predicted class indices (VOC's indices are its raw labels).
``save_dir/color/color_<name>.png``
    Colour maps. The name starts with ``color_`` because the official script takes every file
    matching ``<city>_<seq>_<frame>*.png`` anywhere below its prediction path: this way it
    finds exactly one prediction per image even when pointed at ``save_dir`` itself.
``save_dir/metrics.json``
    :meth:`SegmentationMetric.to_dict` plus the inference settings, model and image count.
"""
import json
import logging
import math
import os

import numpy as np

from .. import data
from ..config import load_config
from ..data import SegRecordDataset
from ..data.labels import cityscapes_train_id_to_id, colorize, get_table
from ..fileio import atomic_json, atomic_png, output_file_problem
from ..inference.segmenter import Segmenter
from ..models.sidecar import SidecarError, read_sidecar, sidecar_path
from .metrics import SegmentationMetric, WorstImages

__all__ = ["evaluate", "sample_name", "save_prediction", "class_names", "write_metrics",
           "run_evaluation", "recipe_validator"]

log = logging.getLogger(__name__)

#: images an evaluation report shows as the worst, unless told otherwise
WORST_IMAGES = 8

_NAME_SUFFIXES = ("_leftImg8bit", "_gtFine_labelIds", "_gtCoarse_labelIds")


def sample_name(dataset, index, meta=None):
    """File-name stem of item ``index``: the record's ``meta(i)['name']`` without folders,
    extension or ``_leftImg8bit`` suffix (Cityscapes: ``<city>_<seq>_<frame>``), else the
    zero-padded index. ``meta``: the item's metadata when already read."""
    if meta is None and callable(getattr(dataset, "meta", None)):
        meta = dataset.meta(index)
    name = (meta or {}).get("name")
    if not name:
        return "%06d" % index
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    for suffix in _NAME_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    return stem


def class_names(dataset_name, num_classes):
    """The dataset's class names, or the class ids when the counts differ."""
    table = get_table(dataset_name)
    if table.num_classes == num_classes:
        return list(table.names)
    return [str(i) for i in range(num_classes)]


def save_prediction(save_dir, name, train_ids, dataset_name="cityscapes"):
    """Write one prediction (official format + colour map); returns the paths.

    Parameters
    ----------
    save_dir : str
    name : str
        File-name stem, e.g. ``frankfurt_000000_000294``.
    train_ids : numpy.ndarray
        (H, W) uint8 predicted trainIds.
    dataset_name : str
        'cityscapes' writes labelIds (:func:`cityscapes_train_id_to_id`); other datasets
        write the trainIds.
    """
    import cv2

    if dataset_name == "cityscapes":
        ids, kind = cityscapes_train_id_to_id(train_ids), "labelIds"
    else:
        ids, kind = np.asarray(train_ids, np.uint8), "trainIds"
    paths = [os.path.join(save_dir, kind, "%s_%s.png" % (name, kind)),
             os.path.join(save_dir, "color", "color_%s.png" % name)]
    images = [ids, cv2.cvtColor(colorize(train_ids, dataset_name), cv2.COLOR_RGB2BGR)]
    for path, image in zip(paths, images):
        atomic_png(path, image)  # never a truncated PNG under the real name
    return paths


def evaluate(segmenter, dataset, num_classes, dataset_name="cityscapes", save_dir=None,
             progress=True, limit=None, ignore_label=255, worst=None):
    """Predict every item of ``dataset`` and accumulate the confusion matrix.

    Parameters
    ----------
    segmenter : duc_hdc.inference.segmenter.Segmenter
        The inference settings (mode, scales, flip) are the segmenter's.
    dataset : dataset
        Items ``(image (H, W, 3) uint8 RGB, label (H, W) uint8 trainIds)``, e.g.
        :class:`duc_hdc.data.SegRecordDataset` or a folder dataset; ``dataset.meta(i)['name']``
        (when present) names the saved files.
    num_classes : int
        Evaluated classes; must equal ``segmenter.classes``.
    dataset_name : str
        'cityscapes', 'voc' or 'kitti_road': class names, palette and saved format.
    save_dir : str, optional
        Write predictions there (see the module docstring).
    progress : bool
        Show a tqdm bar.
    limit : int, optional
        Evaluate the first ``limit`` items only.
    ignore_label : int
    worst : duc_hdc.evaluation.metrics.WorstImages, optional
        Receives every image's own metric (per-image mIoU) and keeps the worst images.

    Returns
    -------
    SegmentationMetric

    Raises
    ------
    ValueError
        Class counts differ, an item has no label, a label's size differs from its image's,
        or a label holds a value that is neither a class id nor ``ignore_label`` (the message
        names the data and the item).
    """
    from tqdm import tqdm

    if segmenter.classes != num_classes:
        raise ValueError("the model predicts %d classes but num_classes=%d (dataset %r)"
                         % (segmenter.classes, num_classes, dataset_name))
    get_table(dataset_name)
    metric = SegmentationMetric(num_classes, ignore_label)
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    where = getattr(dataset, "path", type(dataset).__name__)
    bar = tqdm(range(count), desc="evaluate", unit="img", disable=not progress)
    # datasets of duc_hdc.data read image, label and metadata together with .sample(i)
    with_meta = callable(getattr(dataset, "sample", None))
    for i in bar:
        if with_meta:
            img, label, meta = dataset.sample(i)
        else:
            (img, label), meta = dataset[i], None
        if label is None:
            raise ValueError("%s item %d (%s) has no label; evaluation needs a labelled split"
                             % (where, i, sample_name(dataset, i, meta)))
        label = np.asarray(label)
        if label.shape != np.shape(img)[:2]:
            raise ValueError("%s item %d (%s): image is %dx%d but its label is %s"
                             % (where, i, sample_name(dataset, i, meta), np.shape(img)[0],
                                np.shape(img)[1], "x".join(map(str, label.shape))))
        outside = label[(label != ignore_label) & ((label < 0) | (label >= num_classes))]
        if outside.size:
            raise ValueError("%s item %d (%s): the label holds values %s that are neither "
                             "class ids 0..%d nor the ignore label %d (labelIds instead of "
                             "trainIds, or another dataset's labels?)"
                             % (where, i, sample_name(dataset, i, meta),
                                np.unique(outside)[:10].tolist(), num_classes - 1, ignore_label))
        pred = segmenter.predict(img)
        if worst is None:
            metric.update(label, pred)
        else:
            one = SegmentationMetric(num_classes, ignore_label)
            one.update(label, pred)
            metric.merge(one)
            worst.add(i, sample_name(dataset, i, meta), one, img, label, pred)
        if save_dir is not None:
            save_prediction(save_dir, sample_name(dataset, i, meta), pred, dataset_name)
        if progress:
            bar.set_postfix(mIoU="%.4f" % metric.mean_iou)
    bar.close()
    log.info("evaluated %d images: pixel accuracy %.4f, mIoU %.4f", count, *metric.get())
    return metric


def write_metrics(path, metric, dataset_name="cityscapes", **extra):
    """Write ``metric.to_dict(class names)`` plus ``extra`` as JSON (atomically)."""
    doc = metric.to_dict(class_names(dataset_name, metric.num_classes))
    doc.update(dataset=dataset_name, **extra)
    return atomic_json(path, doc, sort_keys=False)


def _open_dataset(rec=None, root=None, split="val", dataset_name="cityscapes", records=None):
    if rec:
        return records if records is not None else data.SegRecordDataset(rec)
    if root and not os.path.isdir(root):
        raise ValueError("--root %s %s; give the dataset's root folder" % (
            root, "is not a folder" if os.path.exists(root) else "does not exist"))
    if root:
        folders = {"cityscapes": lambda: data.CityscapesFolder(root, split),
                   "voc": lambda: data.VOCFolder(root, split),
                   "kitti_road": lambda: data.KittiRoadFolder(root, split)}
        return folders[dataset_name]()
    raise ValueError("no evaluation data: give --rec FILE.rec or --root DIR --split SPLIT "
                     "(or a config whose data.val_rec is set)")


def _input_files(paths):
    """The files a command reads for ``paths`` (weights, artifacts, records): each, its
    sidecar, an export prefix's three files, a ``.rec``'s ``.idx``."""
    found = []
    for path in paths:
        if not path:
            continue
        path = str(path)
        base = path[:-len(".params")] if path.endswith(".params") else path
        for candidate in (path, base + ".json", path + "-symbol.json", path + "-0000.params",
                          path + ".json", os.path.splitext(path)[0] + ".idx"):
            if os.path.isfile(candidate):
                found.append(candidate)
    return found


def check_metrics_path(path, inputs=()):
    """Refuse, before evaluating, a metrics JSON path that cannot be written or whose file is
    not an earlier evaluation's metrics: one of the command's ``inputs`` (its weights, their
    settings, the records) or any other file. ValueError naming ``--out-json``."""
    path = str(path)
    problem = output_file_problem(path)
    if problem:
        raise ValueError("--out-json: %s" % problem)
    if not os.path.exists(path):
        return
    for used in _input_files(inputs):
        if os.path.samefile(used, path):
            raise ValueError("--out-json %s is an input of this evaluation (%s); writing the "
                             "metrics there would destroy it: give another path" % (path, used))
    try:
        with open(path) as f:
            doc = json.load(f)
        earlier = isinstance(doc, dict) and "mean_iou" in doc and "dataset" in doc
    except (OSError, UnicodeDecodeError, ValueError):
        earlier = False
    if not earlier:
        raise ValueError("--out-json %s exists and is not the metrics of an earlier evaluate; "
                         "nothing was written: give another path or remove it" % path)


def _dataset_of(given, rec, records_dataset, weights):
    """The dataset whose labels the evaluation reads: ``given`` (--dataset or the recipe's),
    else the records' own (each record of ``records_dataset``, opened from ``rec``, names it),
    else the model's (the sidecar of ``weights``), else Cityscapes. Records of one dataset with
    a model or ``--dataset`` of another are refused: the class ids would be compared across
    label tables (a user scored KITTI's road/background labels as Cityscapes' road/sidewalk,
    mIoU 0.01, without a word)."""
    records = (records_dataset.meta(0).get("dataset")
               if records_dataset is not None and len(records_dataset) else None)
    trained = None
    if weights and os.path.isfile(sidecar_path(weights)):
        try:
            trained = read_sidecar(sidecar_path(weights)).get("dataset")
        except SidecarError:
            trained = None  # loading the model has named what is wrong with it
    if records and trained and records != trained:
        raise ValueError("%s holds %s records, the model %s was trained on %s: its classes are "
                         "not the labels' classes; evaluate a %s model on them"
                         % (rec, records, weights, trained, records))
    if given and records and given != records:
        raise ValueError("--dataset %s, but %s holds %s records; drop --dataset (the records "
                         "name their dataset)" % (given, rec, records))
    return given or records or trained or "cityscapes"


def _weights_file(model, params):
    """The weights file a model was loaded from, when it is a local file."""
    for path in (params, model, model and "%s-0000.params" % model):
        if path and os.path.isfile(str(path)):
            return str(path)
    return None


def run_evaluation(config=None, model=None, params=None, classes=None, rec=None, root=None,
                   split="val", dataset_name=None, save_dir=None, out_json=None, limit=None,
                   progress=True, report_dir=None, worst=None, segmenter=None,
                   **segmenter_kwargs):
    """Everything ``duc-hdc evaluate`` does: build the model and data, evaluate, write JSON.

    The model comes from ``config`` (a recipe; weights from ``params``), ``model`` (a zoo or
    model name, with optional ``params``) or ``params`` alone (``FILE.params`` + sidecar). The
    data from ``rec``, ``root`` + ``split``, or the config's ``data.val_rec``. With
    ``report_dir``, also an HTML report there (:func:`duc_hdc.evaluation.report.
    write_evaluation_report`) showing the ``worst`` images with the lowest per-image mIoU
    (default :data:`WORST_IMAGES`).
    ``segmenter``: a :class:`Segmenter` already built (or a callable returning one, called
    after the report folder is checked) instead of one built from the model arguments and
    ``segmenter_kwargs``; the model arguments then only describe it in the outputs.

    Returns
    -------
    (SegmentationMetric, dict)
        The metric and a summary (``dataset``, ``images``, ``json`` path, ``save_dir``,
        ``report``: the report's index.html or None).

    Raises
    ------
    ValueError
        No evaluated image has a labelled pixel (the message names the data).
    duc_hdc.evaluation.report.ReportDirError
        ``report_dir`` cannot be written (checked before evaluating).
    """
    from . import report

    if report_dir is not None:
        report.prepare_report_dir(report_dir)
        keeper = WorstImages(WORST_IMAGES if worst is None else worst)
    else:
        keeper = None
    if segmenter is None:
        segmenter = Segmenter.from_name(model, params=params, config=config, classes=classes,
                                        **segmenter_kwargs)
    elif not isinstance(segmenter, Segmenter):
        segmenter = segmenter()
    if config:
        cfg = load_config(config)
        rec = rec or (None if root else cfg["data"].get("val_rec"))
        dataset_name = dataset_name or cfg["data"]["dataset"]
    if out_json is None and save_dir is not None:
        out_json = os.path.join(save_dir, "metrics.json")
    if out_json:  # before the (long) evaluation, and before an earlier file is removed below
        check_metrics_path(out_json, [params, model, rec])
    records = data.SegRecordDataset(rec) if rec else None  # opened once, named if it is bad
    dataset_name = _dataset_of(dataset_name, rec, records, _weights_file(model, params))
    table = get_table(dataset_name)
    if table.num_classes != segmenter.classes:
        log.warning("the model predicts %d classes but %s has %d: per-class rows are numbered, "
                    "not named, and the labels are read as %s's (give the --dataset the model "
                    "was trained on)", segmenter.classes, dataset_name, table.num_classes,
                    dataset_name)
    dataset = _open_dataset(rec, root, split, dataset_name, records)
    if out_json and os.path.isfile(out_json):
        # the metrics of an earlier evaluation would describe a folder this one is rewriting:
        # if it stops early, no metrics.json may present the mix as one complete evaluation
        os.remove(out_json)
        log.info("removed %s of an earlier evaluation; written again when this one completes",
                 out_json)
    metric = evaluate(segmenter, dataset, segmenter.classes, dataset_name=dataset_name,
                      save_dir=save_dir, progress=progress, limit=limit, worst=keeper)
    images = len(dataset) if limit is None else min(int(limit), len(dataset))
    where = rec or "%s (split %s)" % (root, split)
    if metric.num_pixels == 0:
        raise ValueError("%s: none of the %d evaluated image(s) has a labelled pixel (every "
                         "label is %d = ignored): nothing to evaluate; use a labelled split"
                         % (where, images, metric.ignore_label))
    if rec:  # each record names its split
        split = records.meta(0).get("split") if len(records) else None
    source = dict(config=config, model=model, params=params, rec=rec, root=root, split=split)
    if out_json:
        write_metrics(out_json, metric, dataset_name, images=images,
                      inference=segmenter.settings, model=segmenter.net.config, source=source)
    index = None
    if report_dir is not None:
        weights = _weights_file(model, params)
        facts = report.evaluation_facts(
            model=config or model or params, model_config=segmenter.net.config, weights=weights,
            dataset=dataset_name, data=where, split=split,
            inference=segmenter.settings, images=images)
        index = report.write_evaluation_report(report_dir, metric, facts,
                                               class_names(dataset_name, metric.num_classes),
                                               dataset_name, keeper)
    return metric, dict(dataset=dataset_name, images=images, json=out_json, save_dir=save_dir,
                        report=index)


def recipe_validator(cfg):
    """The training loop's validation for recipe ``cfg``: mIoU on ``data.val_rec`` with the
    whole-image protocol and the shared inference path; see :func:`duc_hdc.training.trainer.train`.
    """
    data = cfg["data"]

    def validate(net, ctx, progress=True):
        dataset = SegRecordDataset(data["val_rec"])
        metric = evaluate(Segmenter(net, ctx=ctx), dataset, net.classes,
                          dataset_name=data["dataset"], limit=data["val_limit"],
                          progress=progress)
        pixel_accuracy, mean_iou = metric.get()
        return dict(pixel_accuracy=float(pixel_accuracy), mean_iou=float(mean_iou),
                    iou=[None if math.isnan(v) else float(v) for v in metric.iou])

    return validate
