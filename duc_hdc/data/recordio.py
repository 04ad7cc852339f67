"""Indexed RecordIO files of (image, label, metadata) records.

A record is ``mx.recordio.pack(header, payload)`` where the payload is the UTF-8 JSON
metadata followed by the image bytes and the label bytes. ``header.id`` is the record index,
``header.id2`` the length of the JSON, and the JSON holds the two other lengths
(``image_bytes``, ``label_bytes``; 0 for a record without label), so every length is an exact
integer (``header.label`` is float32 and would round lengths above 2**24). ``header.label`` is
1.0 when the record has a label, else 0.0.

The image bytes are the source file's bytes as they are (lossless, the default) or a JPEG
re-encoding; the label is always a single-channel PNG of trainIds.

Files written by :class:`RecordWriter`: ``PREFIX.rec`` and ``PREFIX.idx`` (MXNet's indexed
RecordIO) and ``PREFIX.lst``, one tab-separated line per record:
``index  name  image_path  label_path_or_-  anchors`` (anchors as ``row,col;row,col;...``).
"""
import collections
import contextlib
import json
import logging
import os
import struct

import cv2
import numpy as np

from .decoder_messages import damage, decoder_messages

from ..fileio import FileLocked, exclusive_lock, write_errors_named

logger = logging.getLogger(__name__)

__all__ = [
    "BadSampleError",
    "EmptySplitError",
    "RecordFileError",
    "pack_record",
    "unpack_record",
    "decode_image",
    "decode_label",
    "encode_label",
    "check_encoded",
    "RecordWriter",
    "open_indexed",
    "patch_anchors",
    "ConversionReport",
]

# MXNet's RecordIO framing (dmlc-core recordio.h): uint32 magic, uint32 (cflag << 29 | length),
# payload padded to 4 bytes. MXNet offers no way to validate an .idx against its .rec, so the
# check in `open_indexed` reads these 8-byte frame headers itself.
_RECORDIO_MAGIC = 0xCED7230A
_LENGTH_MASK = (1 << 29) - 1


class BadSampleError(ValueError):
    """A source file (image, label or record) that cannot be used; the message names it."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super(BadSampleError, self).__init__("%s: %s" % (self.path, reason))

    def __reduce__(self):
        # rebuilt from (path, reason): it crosses from the conversion's worker processes
        return type(self), (self.path, self.reason)


class EmptySplitError(BadSampleError):
    """A dataset folder without the split in the expected layout (no file is to blame: a missing
    root, split list or image folder); skipping bad files cannot help."""


class RecordFileError(IOError):
    """A .rec / .idx pair that cannot be read (missing index, index of another file, ...)."""


def patch_anchors(height, width):
    """The release's "bigger patch" crop anchors of an image of the given size.

    The original training lists carry 7 crop centres per 1024x2048 Cityscapes image: row 512,
    columns ``256 * i`` for ``i = 1 .. 7``. They are scaled to the image size here.

    Returns
    -------
    list of [int, int]
        ``[row, col]`` pairs in image pixels.
    """
    row = int(round(512.0 * height / 1024.0))
    return [[row, int(round(256.0 * i * width / 2048.0))] for i in range(1, 8)]


# ------------------------------------------------------------------------------------ codecs

def _image_format(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpg"
    return "unknown"


def check_encoded(data, path):
    """Reject an encoded image whose trailer is missing.

    OpenCV decodes a PNG cut after its last data chunk (no ``IEND``) without complaint, so a
    truncated file can pass the decoder; the end markers are checked here by hand.

    Raises
    ------
    BadSampleError
        If the bytes are empty or a PNG / JPEG lacks its end marker.
    """
    if len(data) == 0:
        raise BadSampleError(path, "empty file")
    fmt = _image_format(data)
    if fmt == "png" and data[-8:-4] != b"IEND":
        raise BadSampleError(path, "truncated PNG (no IEND chunk at the end)")
    stripped = data.rstrip(b"\x00")
    if fmt == "jpg" and stripped.rfind(b"\xff\xd9") != len(stripped) - 2:
        raise BadSampleError(path, "truncated JPEG (no end-of-image marker at the end)")
    return fmt


def decode_image(data, path="<bytes>", exif_orientation=False):
    """Decode image bytes to an RGB uint8 array.

    Parameters
    ----------
    data : bytes
        PNG, JPEG or any format OpenCV reads.
    path : str
        Name used in error messages.
    exif_orientation : bool
        Turn the image as its Exif Orientation tag says (as a viewer shows it; OpenCV's own
        default). Off by default: a dataset's label is drawn on the pixels as stored (a
        label PNG has no orientation), so training and evaluation read those.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB.

    Raises
    ------
    BadSampleError
        If the bytes do not decode.
    """
    with decoder_messages() as lines:  # libpng / libjpeg text: into the reason, not stderr
        flags = cv2.IMREAD_COLOR | (0 if exif_orientation else cv2.IMREAD_IGNORE_ORIENTATION)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    why = damage(lines, img is not None)
    if img is None:
        raise BadSampleError(path, "corrupt or truncated image (%d bytes do not decode%s)"
                             % (len(data), ": %s" % why if why else ""))
    if why:
        raise BadSampleError(path, "corrupt image: it decodes only with parts made up (%s)"
                             % why)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_label(data, path="<bytes>"):
    """Decode a single-channel label PNG to an (H, W) uint8 array.

    Raises
    ------
    BadSampleError
        If the bytes do not decode, or the PNG is not single-channel 8-bit.
    """
    with decoder_messages() as lines:
        lab = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    why = damage(lines, lab is not None)
    if lab is None:
        raise BadSampleError(path, "corrupt or truncated label (%d bytes do not decode%s)"
                             % (len(data), ": %s" % why if why else ""))
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise BadSampleError(path, "label must be a single-channel 8-bit PNG, got shape %s "
                             "dtype %s" % (lab.shape, lab.dtype))
    return lab


def encode_label(label):
    """Encode an (H, W) uint8 label map as PNG bytes (lossless)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(label, np.uint8),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV fails only on invalid input
        raise ValueError("could not encode a label of shape %s as PNG" % (label.shape,))
    return buf.tobytes()


def encode_image_jpeg(rgb, quality=95):
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise ValueError("could not encode an image of shape %s as JPEG" % (rgb.shape,))
    return buf.tobytes()


# ------------------------------------------------------------------------------ pack / unpack

def pack_record(index, image_bytes, label_bytes, meta):
    """Pack one record.

    Parameters
    ----------
    index : int
        Record index (stored as ``header.id``; must equal the key in the .idx).
    image_bytes : bytes
        Encoded image.
    label_bytes : bytes or None
        Encoded label PNG, None for an image without label (test split).
    meta : dict
        JSON-serializable metadata (name, anchors, ...).

    Returns
    -------
    bytes
    """
    from mxnet import recordio

    meta = dict(meta)
    meta["image_bytes"] = len(image_bytes)
    meta["label_bytes"] = 0 if label_bytes is None else len(label_bytes)
    meta_bytes = json.dumps(meta, sort_keys=True).encode("utf-8")
    header = recordio.IRHeader(0, 0.0 if label_bytes is None else 1.0, int(index),
                               len(meta_bytes))
    return recordio.pack(header, meta_bytes + image_bytes + (label_bytes or b""))


def unpack_record(buf, source="<record>"):
    """Split a packed record into (index, meta, image_bytes, label_bytes or None).

    Raises
    ------
    BadSampleError
        If the lengths do not add up (a damaged record).
    """
    from mxnet import recordio

    header, payload = recordio.unpack(buf)
    n_meta = int(header.id2)
    try:
        meta = json.loads(payload[:n_meta].decode("utf-8"))
        n_img, n_lab = int(meta.pop("image_bytes")), int(meta.pop("label_bytes"))
    except (ValueError, KeyError, UnicodeDecodeError) as err:
        raise BadSampleError(source, "damaged record metadata (%s)" % err)
    if n_meta + n_img + n_lab != len(payload):
        raise BadSampleError(source, "damaged record: %d payload bytes, header says %d"
                             % (len(payload), n_meta + n_img + n_lab))
    image = payload[n_meta: n_meta + n_img]
    label = payload[n_meta + n_img:] if n_lab else None
    return int(header.id), meta, image, label


# ------------------------------------------------------------------------------------ writer

def _rec_idx_lst(prefix):
    return prefix + ".rec", prefix + ".idx", prefix + ".lst"


class RecordWriter(object):
    """Write ``PREFIX.rec / .idx / .lst`` atomically.

    Records go to ``PREFIX.rec.part`` (and ``.idx.part``, ``.lst.part``); :meth:`commit`
    renames them into place, and leaving the ``with`` block on an exception (KeyboardInterrupt
    included) deletes them, so an interrupted conversion never leaves a partial ``PREFIX.rec``
    and never touches an existing one.

    Parameters
    ----------
    prefix : str
        Output path without extension.
    """

    def __init__(self, prefix):
        from mxnet import recordio

        self.prefix = prefix
        self.final = _rec_idx_lst(prefix)
        self.parts = tuple(p + ".part" for p in self.final)
        out_dir = os.path.dirname(os.path.abspath(prefix))
        if not os.path.isdir(out_dir):
            os.makedirs(out_dir)
        self._record = self._lst = None
        self.closed = False
        self.count = 0
        # one writer per prefix: a second conversion into it would truncate and interleave the
        # first one's .part files (a .rec whose .idx points into another conversion's records)
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(exclusive_lock(prefix + ".lock"))
        except FileLocked as e:
            raise RecordFileError("%s is being written by another conversion (pid %s); nothing "
                                  "was written: wait for it, or give another --out"
                                  % (prefix, e.pid)) from None
        try:
            with write_errors_named(self.final[0], self.parts[0]):
                self._record = recordio.MXIndexedRecordIO(self.parts[1], self.parts[0], "w")
                # names as the file system has them (bytes that are no UTF-8 included)
                self._lst = open(self.parts[2], "w", encoding="utf-8", errors="surrogateescape")
        except BaseException:
            self.abort()
            raise

    def write(self, image_bytes, label_bytes, meta):
        """Append one record; returns its index."""
        index = self.count
        anchors = ";".join("%d,%d" % (r, c) for r, c in meta.get("anchors") or [])
        with write_errors_named(self.final[0], self.parts[0]):  # a full disk names the .rec
            self._record.write_idx(index, pack_record(index, image_bytes, label_bytes, meta))
            self._lst.write("%d\t%s\t%s\t%s\t%s\n" % (index, meta.get("name", ""),
                                                     meta.get("image", ""),
                                                     meta.get("label") or "-", anchors))
        self.count += 1
        return index

    def commit(self):
        """Close the files and move them into place."""
        try:
            with write_errors_named(self.final[0], self.parts[0]):
                self._record.close()
                self._lst.close()
        except BaseException:
            self.abort()
            raise
        # the .idx first: a crash between the renames leaves an old/absent .rec, never a new
        # .rec with a stale index
        for part, final in zip((self.parts[1], self.parts[0], self.parts[2]),
                               (self.final[1], self.final[0], self.final[2])):
            os.replace(part, final)
        self.closed = True
        self._lock.close()

    def abort(self):
        """Close and delete the temporary files (a failing close, e.g. on the full disk that
        stopped the conversion, does not hide why it stopped)."""
        try:
            for handle in (self._record, self._lst):
                if handle is not None:
                    with contextlib.suppress(Exception):
                        handle.close()
        finally:
            for part in self.parts:
                if os.path.exists(part):
                    os.remove(part)
            self.closed = True
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self.closed:
            self.commit()
        elif not self.closed:
            self.abort()
        return False


# ------------------------------------------------------------------------------------ reader

def open_indexed(path_to_rec, verify=True):
    """Open ``PREFIX.rec`` with its ``PREFIX.idx`` for random access.

    Parameters
    ----------
    path_to_rec : str
        Path of the ``.rec`` file; the index is the same path with ``.idx``.
    verify : bool
        Check that every offset of the index points at a record frame of this file and that
        the last record ends where the file ends (reads 8 bytes per record).

    Returns
    -------
    mxnet.recordio.MXIndexedRecordIO

    Raises
    ------
    RecordFileError
        If the .rec or the .idx is missing, empty, or the index does not match the file.
    """
    from mxnet import recordio

    rec = str(path_to_rec)
    base, ext = os.path.splitext(rec)
    idx = base + ".idx"
    if ext in (".idx", ".lst") and os.path.isfile(base + ".rec"):
        raise RecordFileError("%s is the %s of %s.rec: give %s.rec" % (
            rec, "index" if ext == ".idx" else "listing", base, base))
    if os.path.isdir(rec):
        raise RecordFileError("%s is a folder; give the .rec file (PREFIX.rec, as duc-hdc data "
                              "--out PREFIX wrote it)" % rec)
    if not os.path.isfile(rec):
        raise RecordFileError("%s: no such RecordIO file" % rec)
    if not os.path.isfile(idx):
        raise RecordFileError("%s: index %s is missing; re-run the converter that wrote it "
                              "(or rebuild the index with mxnet's tools/rec2idx.py)" % (rec, idx))
    offsets = []
    with open(idx) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            try:
                offsets.append((int(fields[0]), int(fields[1])))
            except (ValueError, IndexError):
                raise RecordFileError("%s line %d: not an index line ('key<TAB>offset'): %r"
                                      % (idx, lineno, line.strip()[:80]))
    if not offsets:
        raise RecordFileError("%s: the index is empty (no records)" % idx)
    if verify:
        _verify_offsets(rec, idx, offsets)
    return recordio.MXIndexedRecordIO(idx, rec, "r")


def _verify_offsets(rec, idx, offsets):
    size = os.path.getsize(rec)
    ordered = sorted(offsets, key=lambda kv: kv[1])
    with open(rec, "rb") as f:
        for key, off in ordered:
            magic, cflag, length = _read_frame(f, off, size)
            if magic != _RECORDIO_MAGIC or cflag not in (0, 1):
                raise RecordFileError("%s does not match %s: no record starts at offset %d "
                                      "(key %d; the file has %d bytes)"
                                      % (idx, rec, off, key, size))
        # follow the last record to its end (the writer splits a payload into several frames
        # wherever it contains the magic number: cflag 1 = first, 2 = middle, 3 = last)
        off = ordered[-1][1]
        while True:
            magic, cflag, length = _read_frame(f, off, size)
            if magic != _RECORDIO_MAGIC:
                raise RecordFileError("%s does not match %s: record frame at offset %d is "
                                      "damaged" % (idx, rec, off))
            off += 8 + ((length + 3) & ~3)
            if cflag in (0, 3):
                break
    if off != size:
        raise RecordFileError("%s does not match %s: the last indexed record ends at byte %d "
                              "but the file has %d bytes (truncated file or stale index)"
                              % (idx, rec, off, size))


def _read_frame(f, off, size):
    if off + 8 > size:
        return None, None, None
    f.seek(off)
    magic, lrec = struct.unpack("<II", f.read(8))
    return magic, lrec >> 29, lrec & _LENGTH_MASK


# ------------------------------------------------------------------ converter command lines

class ConversionReport(collections.namedtuple(
        "ConversionReport", ["prefix", "written", "skipped", "rec_bytes", "seconds"])):
    """What a conversion wrote; ``skipped`` is a list of (path, reason)."""

    def summary(self):
        """The text the converters print at the end."""
        lines = ["wrote %d records to %s.rec (%.1f MiB) in %.1f s; index %s.idx, list %s.lst"
                 % (self.written, self.prefix, self.rec_bytes / 2.0 ** 20, self.seconds,
                    self.prefix, self.prefix)]
        if self.skipped:
            lines.append("skipped %d bad files:" % len(self.skipped))
            lines += ["  %s: %s" % (path, reason) for path, reason in self.skipped]
        return "\n".join(lines)
