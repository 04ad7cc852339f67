"""What the image decoders print while OpenCV decodes, turned into one reason or nothing.

libpng, libjpeg and OpenCV's own log write straight to file descriptor 2 (``libpng error:
IDAT: invalid code lengths set``, ``Corrupt JPEG data: premature end of data segment``,
``[ERROR:0@1.2] global loadsave.cpp ...``): raw library text between the program's own lines,
and for a JPEG damaged inside the only sign that ``cv2.imdecode`` returned an image with parts
made up. :func:`decoder_messages` catches those lines while one image is decoded;
:func:`damage` says whether they mean the image is damaged (and why, in a few words).
"""
import contextlib
import os
import re
import sys
import tempfile
import threading

__all__ = ["decoder_messages", "damage"]

# fd 2 is one per process: decoders of other threads wait rather than write into our capture
_LOCK = threading.Lock()
# the file fd 2 points to during a capture: one per process, made at its first capture and
# emptied for each (a temporary file per image cost more than decoding a small one)
_SINK = None


def _after_fork():
    global _LOCK, _SINK
    # a loader worker forked while another thread decodes must not inherit the lock held, nor
    # share the parent's capture file (and its offset)
    _LOCK = threading.Lock()
    _SINK = None


os.register_at_fork(after_in_child=_after_fork)


def _empty_sink():
    """This process's capture file, empty (call with ``_LOCK`` held)."""
    global _SINK
    if _SINK is None:
        _SINK = tempfile.TemporaryFile(buffering=0)
    else:
        _SINK.seek(0)
        _SINK.truncate()
    return _SINK


@contextlib.contextmanager
def decoder_messages():
    """``with decoder_messages() as lines:`` -- ``lines`` receives what C code wrote to file
    descriptor 2 inside the block (not shown). Without a usable fd 2 nothing is caught."""
    lines = []
    with _LOCK:
        try:
            saved = os.dup(2)
        except OSError:
            yield lines
            return
        try:
            sink = _empty_sink()
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                for line in text.splitlines():
                    if _DECODER_LINE.match(line.strip()):
                        lines.append(line.strip())
                    elif line.strip():  # another thread's (a log line, tqdm): shown late,
                        _write_fd2(line + "\n")  # not lost
        finally:
            os.close(saved)


#: what the decoders OpenCV uses print (libpng, libjpeg's messages, libtiff, libwebp) and
#: OpenCV's own log lines; anything else written to fd 2 meanwhile came from another thread
_DECODER_LINE = re.compile(
    r"^(libpng|libjpeg|libtiff|libwebp|TIFF|Corrupt JPEG|Premature end of JPEG|Not a JPEG|"
    r"JPEG|Bogus|Invalid JPEG|Unsupported JPEG|Wrong JPEG|Improper call to JPEG|Warning|"
    r"\[\s*(WARN|ERROR|INFO|DEBUG|FATAL|VERB)\b|OpenCV\()")


def _write_fd2(text):
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _library_line(line):
    """``libpng error: X`` -> ``libpng: X``; OpenCV's own log lines (source paths) -> None."""
    if line.startswith("[") or "OpenCV(" in line:
        return None
    for prefix in ("libpng error: ", "libpng warning: "):
        if line.startswith(prefix):
            return "libpng: " + line[len(prefix):]
    return line


def damage(lines, decoded):
    """Why the image is damaged, from the decoder's ``lines``, or None.

    Parameters
    ----------
    lines : list of str
        From :func:`decoder_messages`.
    decoded : bool
        Whether the decoder returned an image. If not, the first library line (if any) is the
        reason. If so, libjpeg's ``Corrupt JPEG data`` / ``Premature end of JPEG file``
        mean that parts of the image were made up: damaged. Other warnings (``libpng
        warning: iCCP: known incorrect sRGB profile``) are harmless.
    """
    named = [n for n in (_library_line(line) for line in lines) if n]
    if not decoded:
        return named[0] if named else None
    for line in named:
        if line.startswith("Corrupt JPEG data") or line.startswith("Premature end of JPEG"):
            return "libjpeg: " + line
    return None
