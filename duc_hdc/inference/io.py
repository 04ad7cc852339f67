"""Files in, files out: images, folders, globs and videos -> trainId PNGs, colour maps, overlays.

What ``duc-hdc predict`` does around a :class:`~duc_hdc.inference.segmenter.Segmenter`:

- inputs are expanded (:func:`expand_inputs`): files, folders (recursively), glob patterns;
  a file given twice (or through a folder and by name) is predicted once; a file of another
  format is skipped as ``unsupported format .flv; supported: ...``;
- outputs mirror the inputs' paths relative to the deepest folder holding them all
  (:func:`output_stems`): ``a/good.png b/good.png good_1.png`` -> ``OUT/a/good_*``,
  ``OUT/b/good_*``, ``OUT/good_1_*``; one run never writes a file twice;
- a video reports the frames it read against the frames its container announces
  (``CAP_PROP_FRAME_COUNT``); a truncated one is listed as incomplete, not as a success;
- every file is written atomically (:mod:`duc_hdc.fileio`);
- a run never writes over one of its inputs, and it lists what it writes in
  ``OUT/.duc_hdc_outputs`` (:class:`RunOutputs`): with ``--out`` equal to (or inside) an
  input folder, a later run replaces those files instead of predicting them as new inputs.

:mod:`duc_hdc.inference.predict` runs a Segmenter over all of it (``duc-hdc predict``).
"""
import collections
import glob
import json
import logging
import os

import cv2
from tqdm import tqdm

from ..data.labels import colorize, overlay
from ..data.recordio import BadSampleError, check_encoded, decode_image
from ..fileio import atomic_png, temp_path

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "expand_inputs", "output_stems",
           "unsupported_reason", "read_image", "save_outputs", "predict_video", "is_video",
           "OutputCollision", "RunOutputs", "OUTPUTS_LIST"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

class OutputCollision(OSError):
    """An output file that an earlier input of the same run already wrote."""


def _ext(path):
    return os.path.splitext(path)[1].lower()


def is_video(path):
    return _ext(path) in VIDEO_EXTENSIONS


def _is_image(path):
    return _ext(path) in IMAGE_EXTENSIONS


def _supported():
    return "images %s; videos %s" % (" ".join(IMAGE_EXTENSIONS), " ".join(VIDEO_EXTENSIONS))


def unsupported_reason(path):
    """``unsupported format .flv; supported: images ...; videos ...``."""
    return "unsupported format %s; supported: %s" % (_ext(path) or "(no extension)",
                                                     _supported())


# ------------------------------------------------------------------------------ inputs
def _walk(folder):
    """Supported files under ``folder`` (sorted, recursive) and the other files it holds."""
    files, others = [], []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames.sort()
        for name in sorted(names):
            if _is_image(name) or is_video(name):
                files.append(os.path.join(dirpath, name))
            elif name != OUTPUTS_LIST:
                others.append(os.path.join(dirpath, name))
    return files, others


def output_stems(paths, anchors=None):
    """One distinct output name (relative to the output folder, no extension) per input file.

    Names mirror the files' paths relative to the deepest folder holding all ``anchors`` (for
    each file: the folder given on the command line that it was found in, else its own
    folder); files that would still share a name (``a.png`` and ``a.jpg``) keep their
    extension (``a_png``, ``a_jpg``), and anything left over is numbered.

    >>> output_stems(["a/good.png", "b/good.png", "good_1.png"])
    ['a/good', 'b/good', 'good_1']
    """
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    if anchors is None:
        anchors = [os.path.dirname(a) for a in absolute]
    root = os.path.commonpath([os.path.abspath(a) for a in anchors])
    stems = [os.path.splitext(os.path.relpath(a, root))[0] for a in absolute]
    counts = collections.Counter(stems)
    stems = [s + "_" + (_ext(a)[1:] or "noext") if counts[s] > 1 else s
             for s, a in zip(stems, absolute)]
    taken, used, out = set(stems), set(), []
    for stem in stems:
        name, n = stem, 0
        while name in used or (name != stem and name in taken):
            n += 1
            name = "%s_%d" % (stem, n)
        used.add(name)
        out.append(name)
    return out


def _new(paths, earlier_outputs, item):
    """``paths`` without the outputs of earlier runs (logged)."""
    keep = [p for p in paths if os.path.realpath(p) not in earlier_outputs]
    if len(keep) < len(paths):
        log.info("%s: leaving out %d output file(s) of an earlier run (listed in %s)", item,
                 len(paths) - len(keep), OUTPUTS_LIST)
    return keep


def expand_inputs(inputs, earlier_outputs=()):
    """Expand files, folders (recursively: images and videos) and glob patterns.

    ``earlier_outputs``: real paths of files an earlier run wrote (:meth:`RunOutputs.earlier`);
    a folder or a glob leaves them out (a file named on its own is kept).

    Returns
    -------
    (list of (path, output stem), list of (input, reason))
        The files to predict, each with its output name (:func:`output_stems`), in the order
        given; and the inputs skipped: nothing found, or a format that is not supported. Files
        of other formats inside a folder are ignored (logged).
    """
    files, skipped = [], []  # files: (path, anchor folder for its output name)
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found, others = _walk(item)
            if others:
                log.info("%s: ignoring %d file(s) that are neither images nor videos: %s%s",
                         item, len(others), ", ".join(others[:5]),
                         ", ..." if len(others) > 5 else "")
            if not found:
                skipped.append((item, "folder holds no images or videos (supported: %s)"
                                % _supported()))
            files += [(path, item) for path in _new(found, earlier_outputs, item)]
        elif os.path.isfile(item):
            files.append((item, os.path.dirname(os.path.abspath(item))))
        elif os.path.exists(item):
            skipped.append((item, "not a regular file"))
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                skipped.append((item, "no such file, folder or matching glob"))
            files += [(path, os.path.dirname(os.path.abspath(path)))
                      for path in _new(matches, earlier_outputs, item)]
    seen, keep, anchors = set(), [], []
    for path, anchor in files:
        key = os.path.realpath(path)
        if key in seen:
            log.info("%s given more than once: predicted once", path)
            continue
        seen.add(key)
        if not (_is_image(path) or is_video(path)):
            skipped.append((path, unsupported_reason(path)))
            continue
        keep.append(path)
        anchors.append(anchor)
    return list(zip(keep, output_stems(keep, anchors))), skipped


def read_image(path):
    """Read an image file as (H, W, 3) uint8 RGB, turned upright as its Exif Orientation
    tag says (a photo is predicted and written as a viewer shows it).

    Raises
    ------
    duc_hdc.data.recordio.BadSampleError
        Unsupported format, unreadable, truncated or corrupt file (the message names it).
    """
    if not _is_image(path):
        raise BadSampleError(path, unsupported_reason(path))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadSampleError(path, "cannot read (%s)" % e.strerror)
    check_encoded(data, path)
    return decode_image(data, path, exif_orientation=True)  # upright, as a viewer shows it


# ------------------------------------------------------------------------------ outputs
#: the list of files predict wrote into an output folder (one JSON string a line, relative)
OUTPUTS_LIST = ".duc_hdc_outputs"


class RunOutputs(object):
    """The files one predict run writes into ``out_dir``.

    A file is claimed before it is written: :class:`OutputCollision` if this run already wrote
    it or if it is one of the run's ``inputs`` (never written over). Claimed files are
    appended to ``out_dir/OUTPUTS_LIST`` first, so that a later run into the same folder
    (``--out`` equal to an input folder) tells earlier outputs (:meth:`earlier`: replaced)
    from inputs, whatever their names.
    """

    def __init__(self, out_dir, inputs=()):
        self.out_dir = os.path.abspath(out_dir)
        self.list_path = os.path.join(self.out_dir, OUTPUTS_LIST)
        self.inputs = frozenset(os.path.realpath(p) for p in inputs)
        self.written = set()
        self.listed = set(self._read_list(self.list_path))

    @staticmethod
    def _read_list(list_path):
        try:
            with open(list_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        names = []
        for line in lines:
            try:
                names.append(json.loads(line))
            except ValueError:  # a line cut by a crash
                continue
        return [n for n in names if isinstance(n, str)]

    @classmethod
    def earlier(cls, out_dir):
        """Real paths of the files earlier runs listed in ``out_dir/OUTPUTS_LIST``."""
        return frozenset(os.path.realpath(os.path.join(out_dir, name))
                         for name in cls._read_list(os.path.join(out_dir, OUTPUTS_LIST)))

    def claim(self, paths):
        for path in paths:
            if path in self.written:
                raise OutputCollision("%s was already written by an earlier input of this run"
                                      % path)
            if os.path.realpath(path) in self.inputs:
                raise OutputCollision("its output %s is an input of this run (never written "
                                      "over); give another --out" % path)
        new = [os.path.relpath(p, self.out_dir) for p in paths]
        new = [n for n in new if n not in self.listed]
        if new:
            os.makedirs(self.out_dir, exist_ok=True)
            with open(self.list_path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(n) + "\n" for n in new))
            self.listed.update(new)
        self.written.update(paths)


def _claim(written, paths):
    """Claim ``paths`` for this run (:meth:`RunOutputs.claim`; ``written`` None: no checks);
    :class:`OutputCollision` if one of them may not be written (nothing is claimed then)."""
    paths = [os.path.abspath(p) for p in paths]
    if written is not None:
        written.claim(paths)
    return paths


def _write(path, image):
    """Write ``image`` (RGB or 2-D) as a PNG, atomically."""
    return atomic_png(path, image[:, :, ::-1] if image.ndim == 3 else image)


def save_outputs(out_dir, stem, rgb, train_ids, dataset="cityscapes", overlay_image=True,
                 written=None):
    """Write ``stem_trainIds.png``, ``stem_color.png`` and ``stem_overlay.png`` under out_dir.

    ``written``: the :class:`RunOutputs` of this run (see :class:`OutputCollision`). Returns
    the paths written."""
    suffixes = ["_trainIds.png", "_color.png"] + (["_overlay.png"] if overlay_image else [])
    paths = _claim(written, [os.path.join(out_dir, stem + s) for s in suffixes])
    images = [train_ids, colorize(train_ids, dataset)]
    if overlay_image:
        images.append(overlay(rgb, train_ids, dataset))
    return [_write(path, image) for path, image in zip(paths, images)]


class _VideoOut(object):
    """An MJPG AVI written under a temporary name and renamed when complete (OpenCV's own
    MJPEG writer: no FFmpeg needed, the container does not depend on the file name)."""

    def __init__(self, path, fps, size):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.tmp = temp_path(path, ".avi")
        self.writer = cv2.VideoWriter(self.tmp, cv2.CAP_OPENCV_MJPEG,
                                      cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        if not self.writer.isOpened():
            raise OSError("could not open %s for writing (OpenCV MJPEG writer)" % path)

    def write(self, rgb):
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self, keep):
        self.writer.release()
        if keep:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def predict_video(segmenter, path, out_dir, stem, dataset="cityscapes", progress=True,
                  written=None):
    """Frame by frame: ``OUT/stem/frame_NNNNNN_{trainIds,color}.png`` and ``OUT/stem_overlay.avi``.

    Returns
    -------
    dict
        ``path``, ``frames`` read, ``expected`` (the container's frame count; None when it
        announces none), ``complete`` (frames read >= expected, at least one), ``reason`` (why
        not complete, else None) and ``files`` written.
    """
    report = dict(path=path, frames=0, expected=None, complete=False, reason=None, files=[])
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        report["reason"] = ("OpenCV cannot open the video (damaged file, or a codec this "
                            "OpenCV build lacks)")
        return report
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    report["expected"] = expected if expected > 0 else None
    video_path = os.path.join(out_dir, stem + "_overlay.avi")
    video = None
    frames = 0
    try:
        with tqdm(total=report["expected"], desc=os.path.basename(path), unit="frame",
                  disable=not progress) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                ids = segmenter.predict(rgb)
                report["files"] += save_outputs(os.path.join(out_dir, stem),
                                                "frame_%06d" % frames, rgb, ids, dataset,
                                                overlay_image=False, written=written)
                if video is None:
                    _claim(written, [video_path])
                    video = _VideoOut(video_path, fps, (rgb.shape[1], rgb.shape[0]))
                video.write(overlay(rgb, ids, dataset))
                frames += 1
                bar.update(1)
    finally:
        cap.release()
        if video is not None:
            video.close(keep=frames > 0)
    report["frames"] = frames
    if frames:
        report["files"].append(os.path.abspath(video_path))
    if frames == 0:
        report["reason"] = "no frame decodes (truncated or damaged file?)"
    elif report["expected"] and frames < report["expected"]:
        report["reason"] = ("%d of %d frames read (truncated or damaged file?)"
                            % (frames, report["expected"]))
    else:
        report["complete"] = True
    log.info("%s: %d%s frames -> %s", path, frames,
             " of %d" % report["expected"] if report["expected"] else "", video_path)
    return report
