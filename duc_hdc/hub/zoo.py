"""Pretrained weights: name -> (URL, checksum, model settings), with a verified local cache.

This is the hub's public face; the parts live beside it: :mod:`.entries` (the table,
:class:`ZooEntry`, lookups), :mod:`.download` (HTTP / file download: lock, timeout, retries,
resume, sha256), :mod:`.cache` (fetching ``url`` entries, registered local files, hash
records), :mod:`.gluoncv` (the GluonCV mirror), :mod:`.onnx_zoo` (ONNX-zoo conversion). Every
name below is importable from here.

Every entry of :data:`MODELS` carries what is needed to *use* the file, not only to fetch it: the
``model`` name for :func:`duc_hdc.get_model`, ``classes``, ``cell_width``, the input
normalization (``mean`` / ``std``, RGB on the 0..255 scale: ``x = (img - mean) / std``, from
:data:`duc_hdc.normalization.NORMALIZATION`), the dataset and the reported metric with its
protocol.

Three sources:

``url``
    Downloaded from ``urls`` (tried in order) into the cache and checked against ``sha256``.
    ONNX files (``kind='onnx'``) are converted to our parameters on first use by
    :func:`duc_hdc.hub.convert.convert_onnx`; the converted file is cached too.
``gluoncv``
    ImageNet backbones from GluonCV's model store, fetched by
    :func:`gluoncv.model_zoo.model_store.get_model_file` (its own SHA-1 check and lock).
``local``
    Files that cannot be downloaded (the authors' original Cityscapes model): the user converts
    them and registers the result with :func:`register_local`.

Cache: ``$DUC_HDC_HOME`` (default ``~/.duc_hdc/models``) or ``root=``. Downloads stream into
``FILE.part`` in the cache directory, are verified, then renamed into place; an interrupted
transfer is resumed from ``FILE.part`` with an HTTP Range request when the server allows it,
else started over and the part removed. A lock (``portalocker`` on ``FILE.lock``, removed after
use) makes concurrent downloads of one file safe. ``timeout`` (seconds) bounds every wait for
data, including a server that stalls after sending the headers. A mirror or an offline copy is
selected with ``base_url=`` or ``$DUC_HDC_BASE_URL`` (``https://``, ``http://`` or ``file://``):
it replaces everything before the file name.
"""
import os

from .cache import (HASH_SIDECAR_SUFFIX, fetch, local_file, register_local, read_hash_sidecar,
                    verified_by_sidecar, write_hash_sidecar)
from .download import DEFAULT_TIMEOUT, ENV_LOCK_TIMEOUT, download, file_lock, part_path
from .entries import (DEFAULT_HOME, ENV_BASE_URL, ENV_HOME, GLUONCV_SHA1, MODELS, ZooEntry,
                      describe, get_entry, get_home, list_models, resolve_urls)
from .errors import (ChecksumError, DownloadError, IncompleteDownloadError, LockTimeoutError,
                     UnknownModelError, WeightsNotAvailableError)
from ..fileio import sha256sum
from .gluoncv import gluoncv_file, gluoncv_root
from .onnx_zoo import converted_onnx

__all__ = [
    "ZooEntry", "MODELS", "DownloadError", "ChecksumError", "IncompleteDownloadError",
    "LockTimeoutError", "UnknownModelError", "WeightsNotAvailableError", "get_home",
    "list_models", "get_entry", "describe", "resolve_urls", "download", "sha256sum", "fetch",
    "get_weights", "register_local", "is_cached", "weights_for_model", "HASH_SIDECAR_SUFFIX",
    "DEFAULT_TIMEOUT", "ENV_HOME", "ENV_BASE_URL", "ENV_LOCK_TIMEOUT", "DEFAULT_HOME",
    "GLUONCV_SHA1", "file_lock", "part_path", "read_hash_sidecar", "verified_by_sidecar",
    "write_hash_sidecar",
]


def get_weights(name, root=None, base_url=None, allow_unverified=False, progress=True,
                retries=2, timeout=DEFAULT_TIMEOUT, retry_delay=1.0):
    """Path of the ready-to-load weights of zoo entry ``name``, downloading them if needed.

    The cached file is re-verified on every call (sha256, or the sidecar hash of converted and
    registered files) and fetched again (or re-converted) when it does not match.

    Parameters
    ----------
    name : str
        Zoo name (see :func:`list_models`).
    root : str, optional
        Cache directory (default ``$DUC_HDC_HOME`` or ``~/.duc_hdc/models``).
    base_url : str, optional
        Mirror (``https://``, ``http://``, ``file://``) replacing everything before the file
        name (default ``$DUC_HDC_BASE_URL``). For GluonCV backbones the mirror must hold
        GluonCV's ``<name>-<sha1[:8]>.zip`` archives.
    allow_unverified : bool
        Accept an entry that has no sha256 (``duc-hdc download --trust``).
    progress, retries, retry_delay
        Passed to :func:`download`.
    timeout : float
        Seconds without data (connecting, or mid-transfer) before an attempt gives up
        (``duc-hdc download --timeout``).

    Returns
    -------
    str
        A ``.params`` file: GluonCV backbone weights, or duc-hdc network parameters (ONNX
        entries converted, local entries as registered).

    Raises
    ------
    UnknownModelError
        ``name`` is not in the zoo (the message lists the names).
    WeightsNotAvailableError
        No hash and not trusted, or a local-only entry not registered yet (the message says how
        to produce it) or corrupted.
    DownloadError
        The download failed (URL and reason in the message).
    """
    entry = get_entry(name)
    home = get_home(root)
    kwargs = dict(progress=progress, retries=retries, timeout=timeout, retry_delay=retry_delay)
    if entry.source == "gluoncv":
        return gluoncv_file(entry, home, base_url, **kwargs)
    if entry.source == "local":
        return local_file(entry, home)
    if entry.kind == "onnx":
        return converted_onnx(entry, home, base_url=base_url,
                               allow_unverified=allow_unverified, **kwargs)
    return fetch(name, root=home, base_url=base_url, allow_unverified=allow_unverified, **kwargs)



def is_cached(name, root=None):
    """Whether usable weights for ``name`` are in the cache (without downloading or hashing)."""
    entry = get_entry(name)
    home = get_home(root)
    if entry.source == "gluoncv":
        return os.path.exists(os.path.join(gluoncv_root(home), entry.file_name))
    if entry.kind == "onnx":
        return os.path.exists(os.path.join(home, entry.params_file))
    return os.path.exists(os.path.join(home, entry.file_name))


def weights_for_model(model_name, root=None, base_url=None, allow_unverified=False,
                      progress=True, timeout=DEFAULT_TIMEOUT):
    """Weights for ``duc_hdc.get_model(model_name, pretrained=True)``.

    Among the entries whose ``model`` is ``model_name`` (or whose zoo name is ``model_name``),
    a registered local copy of the authors' weights is preferred (it is the original release
    itself); otherwise the first downloadable entry is used.

    Returns
    -------
    (ZooEntry, str)
        The entry and the path of its ready-to-load ``.params``.

    Raises
    ------
    UnknownModelError
        No zoo entry provides weights for ``model_name`` (the message lists the models that have).
    """
    candidates = [e for e in MODELS.values() if e.model == model_name or e.name == model_name]
    if not candidates:
        with_weights = sorted({e.model for e in MODELS.values() if e.model})
        raise UnknownModelError(
            "no pretrained weights for model {!r}; models with weights: {} (ImageNet backbones: "
            "{})".format(model_name, ", ".join(with_weights), ", ".join(
                sorted(e.name for e in MODELS.values() if e.source == "gluoncv"))))
    kwargs = dict(root=root, base_url=base_url, allow_unverified=allow_unverified,
                  progress=progress, timeout=timeout)
    for entry in candidates:
        if entry.source == "local" and is_cached(entry.name, root):
            return entry, get_weights(entry.name, root=root)
    for entry in candidates:
        if entry.source != "local":
            return entry, get_weights(entry.name, **kwargs)
    return candidates[0], get_weights(candidates[0].name, root=root)
