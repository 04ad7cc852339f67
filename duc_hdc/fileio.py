"""File writing shared by every layer: atomic writes and checksums (no duc_hdc imports).

Every file the project writes goes through :func:`atomic_write` (or :func:`atomic_json`): the
content lands under a temporary name in the same folder and is renamed over the target once
complete, so a crash never leaves a half-written file under the real name.
"""
import contextlib
import hashlib
import json
import os

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """``with atomic_write(path) as f:`` writes ``path`` atomically (``mode`` 'w' or 'wb').

    For writers that take a file name rather than a file object (``mx.nd.save``,
    ``Trainer.save_states``), use :func:`atomic_path`.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".%s.tmp%d" % (os.path.basename(path), os.getpid()))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
