"""File writing shared by every layer: atomic writes and checksums (no duc_hdc imports).

Every file the project writes goes through :func:`atomic_write` (or :func:`atomic_json`): the
content lands under a temporary name in the same folder and is renamed over the target once
complete, so a crash never leaves a half-written file under the real name; a failed write (a
full disk) raises an ``OSError`` naming the real file (:func:`write_errors_named`).
"""
import contextlib
import errno
import hashlib
import json
import os
import re
import threading

_CHUNK = 1 << 20
#: what MXNet's writers (``mx.nd.save``, ``save_parameters``, RecordIO) say when a write fails;
#: they take a file name and report no errno
_MXNET_WRITE_FAILURES = ("FileStream.Write incomplete", "LocalFileSystem::Open",
                         "LocalFileSystem: Check failed: allow_null: :Open")
#: the end of dmlc's failed-open text: ``Open "PATH": <the C library's strerror>``
_MXNET_OPEN = re.compile(r'Open "[^"]*": ([^\n]+?)\s*$')


def _mxnet_open_errno(text):
    """The errno whose ``strerror`` ends MXNet's failed-open ``text`` (dmlc reports the OS's
    reason only as words), or None."""
    match = _MXNET_OPEN.search(text)
    if not match:
        return None
    words = {os.strerror(code): code for code in sorted(errno.errorcode)}
    return words.get(match.group(1))


@contextlib.contextmanager
def write_errors_named(path, tmp=None):
    """Inside the block, a failed write of ``path`` (or of its temporary name ``tmp``) raises an
    ``OSError`` naming ``path``: an OSError without a file name (a flush or close on a full
    disk), one naming ``tmp``, or MXNet's error text for an incomplete write (then ENOSPC when
    the device is full, else EIO saying the write was incomplete)."""
    try:
        yield
    except OSError as e:
        if e.errno is None or (e.filename is not None and e.filename != tmp):
            raise
        raise OSError(e.errno, e.strerror, path) from e
    except Exception as e:
        if type(e).__name__ != "MXNetError" or not any(m in str(e)
                                                        for m in _MXNET_WRITE_FAILURES):
            raise
        code = _mxnet_open_errno(str(e))
        if code is not None:  # the file could not be created: the OS's reason, in its words
            raise OSError(code, os.strerror(code), path) from e
        try:
            stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
            full = stat.f_bavail * stat.f_frsize < _CHUNK
        except OSError:
            full = False
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
        raise OSError(errno.EIO, "could not be written completely (a full disk, a file size "
                      "limit or a missing folder?)", path) from e


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """``with atomic_write(path) as f:`` writes ``path`` atomically (``mode`` 'w' or 'wb').

    For writers that take a file name rather than a file object (``mx.nd.save``,
    ``Trainer.save_states``), use :func:`atomic_path`.
    """
    with atomic_path(path) as tmp:  # which syncs the file once it is closed
        with open(tmp, mode) as f:
            yield f


class FileLocked(Exception):
    """Another process holds the lock (:func:`exclusive_lock`); ``pid`` is the holder's."""

    def __init__(self, path, pid):
        super().__init__("%s is held by pid %s" % (path, pid))
        self.path, self.pid = path, pid


def try_lock(lock_path):
    """An open handle of ``lock_path`` holding its exclusive lock (``portalocker``: the
    kernel's flock, freed when its holder dies, even by SIGKILL), or None while another process
    holds it. A file its holder removed before this process locked it is not taken: the
    handle returned always locks the file now at ``lock_path``, so removing a lock file while
    holding it never lets two holders in."""
    import portalocker

    while True:
        handle = open(lock_path, "a+")
        try:
            portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.exceptions.LockException:
            handle.close()
            return None
        try:
            current = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except FileNotFoundError:
            current = False
        if current:
            return handle
        portalocker.unlock(handle)  # the previous holder removed this file: lock the new one
        handle.close()


def release_lock(handle, lock_path, remove=True):
    """Undo :func:`try_lock` (``remove``: delete the file first, still holding it)."""
    import portalocker

    try:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock_path)
    finally:
        portalocker.unlock(handle)
        handle.close()


@contextlib.contextmanager
def exclusive_lock(lock_path, remove=True):
    """Hold ``lock_path`` (:func:`try_lock`) or raise :class:`FileLocked` at once, naming the
    holder's pid, which the file holds (:func:`duc_hdc.hub.download.file_lock` waits
    instead)."""
    handle = try_lock(lock_path)
    if handle is None:
        try:
            with open(lock_path) as f:
                pid = f.read().strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise FileLocked(lock_path, pid)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write("%d\n" % os.getpid())
        handle.flush()
        yield
    finally:
        release_lock(handle, lock_path, remove)


def output_file_problem(path):
    """Why a file cannot be written at ``path`` as far as can be told before writing it (the
    words), or None: it is a folder, or a folder on its way is a file. For checks before long
    work, whose result the OS would refuse only at its end."""
    if os.path.isdir(path):
        return "%s is a folder; a file path was expected" % path
    head = os.path.dirname(os.path.abspath(path))
    while head and not os.path.exists(head):
        head = os.path.dirname(head)
    if head and not os.path.isdir(head):
        return "%s is a file, not a folder, so %s cannot be created" % (head, path)
    return None


def temp_path(path, suffix=""):
    """The hidden temporary name beside ``path`` that a write lands under before its rename:
    process and thread in it, so two writers of one path never share one (``suffix``: for
    writers that choose the format by extension, e.g. ``.avi``)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, ".%s.tmp%d-%d%s" % (name, os.getpid(), threading.get_ident(),
                                                    suffix))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        with write_errors_named(path, tmp):
            yield tmp
            _fsync(tmp)  # on disk before the rename (MXNet's writers do not sync)
        os.replace(tmp, path)
        _fsync(folder)  # the rename itself survives a power loss
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path):
    """fsync a written file or a folder; where the file system cannot, nothing is lost by not
    syncing, so that is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_png(path, image):
    """Encode ``image`` (as OpenCV takes it: 2-D, or BGR) as PNG and write it atomically: a kill
    never leaves a truncated PNG under the real name (``cv2.imwrite`` writes in place)."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError("could not encode %s as PNG (array %s)" % (path, np.shape(image)))
    with atomic_write(path, "wb") as f:
        f.write(data.tobytes())
    return path


def atomic_json(path, doc, **kwargs):
    """Write ``doc`` as JSON to ``path`` atomically (NaN refused: JSON has none)."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    with atomic_write(path) as f:
        json.dump(doc, f, allow_nan=False, **kwargs)
    return path


def sha256sum(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_jsonl(path, check=None):
    """The rows of a JSON-lines file (``metrics.jsonl``), and whether its last line was cut
    short (written by a process killed mid-line: no newline and not JSON; left out). Any other
    line that is not JSON, or that ``check(row)`` finds a problem with (it returns the words,
    else None), is a ``ValueError`` naming the file and the line."""
    rows, cut = [], False
    with open(path) as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            if n == len(lines) and not line.endswith("\n"):
                cut = True
                continue
            raise ValueError("%s line %d is not JSON: %s" % (path, n, e)) from None
        problem = check(row) if check is not None else None
        if problem:
            raise ValueError("%s line %d: %s" % (path, n, problem))
        rows.append(row)
    return rows, cut


def read_params(path):
    """The named arrays of an MXNet ``.params`` file; one ``ValueError`` naming the file when
    it is truncated, damaged or not a parameter file (never MXNet's own error text). The one
    reader of ``.params`` files (the loader, the release converter); mxnet is imported here,
    not at the top, so that this module stays free of it."""
    import mxnet as mx

    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError:
        raise ValueError("%s is not a complete MXNet parameter file (truncated or damaged?); "
                         "%d bytes" % (path, os.path.getsize(path))) from None
    if not isinstance(loaded, dict):
        raise ValueError("%s holds an unnamed list of arrays, not named parameters" % path)
    return loaded
