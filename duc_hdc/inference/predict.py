"""``duc-hdc predict``: a Segmenter over images, folders, globs and videos (files: :mod:`.io`).

:func:`run_prediction` loads the model (the one loader), :func:`predict_paths` writes the
outputs, :func:`prediction_report` turns the result into the lines and exit status the command
prints: a skipped input or a video read only in part is reported, never counted as a success.
"""
import logging
import os

from tqdm import tqdm

from ..data.labels import DATASETS, get_table
from ..data.recordio import BadSampleError
from .io import (OutputCollision, RunOutputs, expand_inputs, is_video, predict_video, read_image,
                 save_outputs)
from .segmenter import Segmenter

__all__ = ["predict_paths", "prediction_report", "default_dataset", "run_prediction",
           "EXIT_OK", "EXIT_NOTHING", "EXIT_PARTIAL"]

log = logging.getLogger(__name__)

#: Exit status of ``duc-hdc predict`` (:func:`prediction_report`): every input predicted in
#: full; nothing predicted; some inputs skipped or incomplete (the others written).
EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 1, 3


def predict_paths(segmenter, inputs, out_dir, dataset=None, progress=True):
    """Predict images, folders, globs and videos; write trainIds, colour maps and overlays.

    For an image ``STEM.jpg`` (``STEM`` its path relative to the deepest folder holding all
    inputs, :func:`~duc_hdc.inference.io.output_stems`): ``OUT/STEM_trainIds.png`` (uint8 trainIds),
    ``OUT/STEM_color.png`` (the dataset's palette) and ``OUT/STEM_overlay.png``. For a video
    ``STEM.mp4``: ``OUT/STEM/frame_NNNNNN_trainIds.png`` and ``_color.png`` per frame and
    ``OUT/STEM_overlay.avi``. A run never writes one file twice, nor over one of its inputs
    (that input is skipped); files of an earlier run are replaced, and a folder or glob
    leaves them out of the inputs (:class:`~duc_hdc.inference.io.RunOutputs`). Unreadable
    inputs are logged and skipped.

    Parameters
    ----------
    segmenter : Segmenter
    inputs : sequence of str
        Files, folders or glob patterns.
    out_dir : str
        Output folder (created).
    dataset : str, optional
        Palette: 'cityscapes', 'voc' or 'kitti_road' (a warning when its class count is not
        the model's); default: the one with the model's class count, else 'cityscapes'.
    progress : bool
        Show tqdm bars.

    Returns
    -------
    dict
        ``images`` and ``frames`` predicted, ``videos`` with at least one frame, ``outputs``
        (input, output stem) of everything predicted, ``files`` written, ``video_reports``
        (:func:`~duc_hdc.inference.io.predict_video`), ``skipped`` and ``incomplete`` as lists of (input, reason).
    """
    chosen, dataset = dataset, dataset or default_dataset(segmenter.classes)
    table = get_table(dataset)  # an unknown palette fails before any work
    if chosen and table.num_classes != segmenter.classes:  # as evaluate warns
        log.warning("the model predicts %d classes but %s has %d: the colour maps use %s's "
                    "palette (classes without a colour are drawn black; give the --dataset "
                    "the model was trained on)", segmenter.classes, dataset, table.num_classes,
                    dataset)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError("--out %s is a file; predict writes into a folder" % out_dir)
    found, skipped = expand_inputs(inputs, RunOutputs.earlier(out_dir))
    for item, reason in skipped:
        log.warning("skipping %s: %s", item, reason)
    os.makedirs(out_dir, exist_ok=True)
    written = RunOutputs(out_dir, [path for path, _ in found])
    result = dict(images=0, frames=0, videos=0, outputs=[], files=[], video_reports=[],
                  skipped=skipped, incomplete=[])
    images = [(p, s) for p, s in found if not is_video(p)]
    videos = [(p, s) for p, s in found if is_video(p)]
    for path, stem in tqdm(images, desc="predict", unit="img", disable=not progress):
        try:
            rgb = read_image(path)
        except BadSampleError as e:
            log.warning("skipping unreadable image %s", e)
            skipped.append((path, e.reason))
            continue
        try:
            result["files"] += save_outputs(out_dir, stem, rgb, segmenter.predict(rgb),
                                            dataset, written=written)
        except OutputCollision as e:
            log.warning("skipping %s: %s", path, e)
            skipped.append((path, str(e)))
            continue
        result["images"] += 1
        result["outputs"].append((path, stem))
    for path, stem in videos:
        try:
            report = predict_video(segmenter, path, out_dir, stem, dataset, progress, written)
        except OutputCollision as e:
            log.warning("skipping %s: %s", path, e)
            skipped.append((path, str(e)))
            continue
        result["video_reports"].append(report)
        result["files"] += report["files"]
        if report["frames"] == 0:
            log.warning("skipping video %s: %s", path, report["reason"])
            skipped.append((path, report["reason"]))
            continue
        result["videos"] += 1
        result["frames"] += report["frames"]
        result["outputs"].append((path, stem))
        if not report["complete"]:
            log.warning("%s: %s", path, report["reason"])
            result["incomplete"].append((path, report["reason"]))
    return result


def prediction_report(result, out_dir):
    """What ``duc-hdc predict`` prints and returns for a :func:`predict_paths` result.

    Returns
    -------
    (list of str, list of str, int)
        Lines for stdout, lines for stderr, exit status: 0 every input predicted in full, 1
        nothing predicted, 3 some inputs skipped or incomplete (the others written).
    """
    frames = "%d frame(s)" % result["frames"]
    expected = [r["expected"] for r in result["video_reports"] if r["frames"]]
    if expected and all(expected) and sum(expected) != result["frames"]:
        frames = "%d of %d frame(s)" % (result["frames"], sum(expected))
    out = ["%d image(s), %s from %d video(s) written to %s (%d files)"
           % (result["images"], frames, result["videos"], out_dir, len(result["files"]))]
    err = []
    if result["incomplete"]:
        err.append("%d video(s) incomplete:" % len(result["incomplete"]))
        err += ["  %s: %s" % item for item in result["incomplete"]]
    if result["skipped"]:
        err.append("%d input(s) skipped:" % len(result["skipped"]))
        err += ["  %s: %s" % item for item in result["skipped"]]
    if not result["images"] + result["frames"]:
        status = EXIT_NOTHING
    elif result["incomplete"] or result["skipped"]:
        status = EXIT_PARTIAL
    else:
        status = EXIT_OK
    return out, err, status


def default_dataset(classes):
    """The label table (palette) with ``classes`` classes, else 'cityscapes'."""
    for name, table in DATASETS.items():
        if table.num_classes == classes:
            return name
    return "cityscapes"


def run_prediction(inputs, out_dir, model=None, params=None, config=None, classes=None,
                   dataset=None, progress=True, **segmenter_kwargs):
    """Everything ``duc-hdc predict`` does: load the model, build the Segmenter, then
    :func:`predict_paths`.

    Parameters
    ----------
    inputs : sequence of str
        Images, folders, globs, videos.
    out_dir : str
        Output folder.
    model, params, config, classes
        Any model :func:`duc_hdc.inference.loader.load` takes.
    dataset : str, optional
        Palette; default :func:`default_dataset` of the model's class count.
    **segmenter_kwargs
        ``ctx``, ``scales``, ``flip``, ``mode``, ``crop_size``, ``stride``, ``batch_size``.

    Returns
    -------
    dict
        See :func:`predict_paths`; :func:`prediction_report` formats it.
    """
    segmenter = Segmenter.from_name(model, params=params, config=config, classes=classes,
                                    **segmenter_kwargs)
    return predict_paths(segmenter, inputs, out_dir, dataset=dataset, progress=progress)
