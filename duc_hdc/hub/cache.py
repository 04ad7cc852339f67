"""The weight cache: verified fetches of ``url`` entries, registered local files, hash records.

Files that are not downloaded as such (converted ONNX weights, registered local files) carry a
hash record ``FILE.sha256.json`` written when they were made; every use re-checks it.
"""
import json
import logging
import os
import shutil
import time

from ..fileio import atomic_json, atomic_path, sha256sum
from ..models.sidecar import sidecar_path
from .download import DEFAULT_TIMEOUT, download, file_lock
from .entries import ENV_BASE_URL, get_entry, get_home, local_instructions, resolve_urls
from .errors import ChecksumError, DownloadError, WeightsNotAvailableError

__all__ = ["HASH_SIDECAR_SUFFIX", "fetch", "register_local", "local_file", "write_hash_sidecar",
           "read_hash_sidecar", "verified_by_sidecar"]

logger = logging.getLogger(__name__)

#: suffix of the JSON file recording the sha256 of a converted or registered file
HASH_SIDECAR_SUFFIX = ".sha256.json"


# ---------------------------------------------------------------------------------- hash records
def hash_sidecar(path):
    """``FILE`` -> ``FILE.sha256.json``."""
    return path + HASH_SIDECAR_SUFFIX


def write_hash_sidecar(path, **info):
    """Record the sha256 and size of ``path`` (plus ``info``) in its hash record."""
    doc = dict(file=os.path.basename(path), sha256=sha256sum(path),
               size=os.path.getsize(path), created=time.strftime("%Y-%m-%dT%H:%M:%S"), **info)
    atomic_json(hash_sidecar(path), doc)
    return doc


def read_hash_sidecar(path):
    """The hash record of ``path``, or None when it is missing or unreadable."""
    record = hash_sidecar(path)
    if not os.path.exists(record):
        return None
    try:
        with open(record) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or "sha256" not in doc:
            raise ValueError("no 'sha256' key")
        return doc
    except ValueError as e:
        logger.warning("ignoring unreadable %s: %s", record, e)
        return None


def verified_by_sidecar(path, **expect):
    """True if ``path`` exists and matches the sha256 (and ``expect`` fields) of its record."""
    if not os.path.exists(path):
        return False
    doc = read_hash_sidecar(path)
    if doc is None:
        return False
    for key, value in expect.items():
        if doc.get(key) != value:
            logger.info("%s was made from %s=%s, not %s: rebuilding", path, key, doc.get(key),
                        value)
            return False
    actual = sha256sum(path)
    if actual != doc["sha256"]:
        logger.warning("%s is corrupted: sha256 %s, recorded %s in %s", path, actual,
                       doc["sha256"], hash_sidecar(path))
        return False
    return True


# ---------------------------------------------------------------------------------- url entries
def check_trusted(entry, allow_unverified):
    """Refuse an entry without a sha256 unless the caller accepts unverified files."""
    if entry.sha256 is None and not allow_unverified:
        raise WeightsNotAvailableError(
            "zoo entry {!r} has no known sha256, so its download cannot be verified; refusing "
            "to use it. Pass allow_unverified=True (duc-hdc download {} --trust) to accept it "
            "anyway".format(entry.name, entry.name))


def fetch(name, root=None, base_url=None, allow_unverified=False, progress=True, retries=2,
          timeout=DEFAULT_TIMEOUT, retry_delay=1.0):
    """Download (or find in the cache) the raw file of a ``url`` entry, verified.

    For ONNX entries this is the ``.onnx`` file; :func:`duc_hdc.hub.zoo.get_weights` converts
    it.

    Parameters
    ----------
    name : str
        Zoo name.
    root : str, optional
        Cache directory (default ``$DUC_HDC_HOME`` or ``~/.duc_hdc/models``).
    base_url : str, optional
        Mirror replacing everything before the file name (default ``$DUC_HDC_BASE_URL``).
    allow_unverified : bool
        Accept an entry without a sha256.
    progress, retries, timeout, retry_delay
        Passed to :func:`duc_hdc.hub.download.download` (``timeout``: seconds without data).

    Returns
    -------
    str
        Path of the verified file in the cache.
    """
    entry = get_entry(name)
    if entry.source != "url":
        raise ValueError("zoo entry {!r} is not downloaded from a URL (source {!r}); use "
                         "get_weights()".format(name, entry.source))
    check_trusted(entry, allow_unverified)
    urls = resolve_urls(entry, base_url)
    if not urls:
        raise WeightsNotAvailableError("zoo entry {!r} has no URL; pass base_url= or set ${} "
                                       "to a mirror holding {}".format(name, ENV_BASE_URL,
                                                                       entry.file_name))
    path = os.path.join(get_home(root), entry.file_name)
    errors = []
    for url in urls:
        try:
            return download(url, path, sha256=entry.sha256, progress=progress, retries=retries,
                            timeout=timeout, retry_delay=retry_delay, size=entry.size)
        except DownloadError as e:
            errors.append(e)
            if len(urls) > 1:
                logger.warning("%s; trying the next location", e)
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError("could not download {!r} from any of its {} locations:\n  {}".format(
        name, len(urls), "\n  ".join(str(e) for e in errors)), url=urls[-1]) from errors[-1]


# ---------------------------------------------------------------------------------- local files
def local_file(entry, home):
    """The registered file of a ``local`` entry, re-verified (registered in place when it was
    converted straight into the cache)."""
    path = os.path.join(home, entry.file_name)
    with file_lock(path):
        if os.path.exists(path):
            doc = read_hash_sidecar(path)
            if doc is None:
                # written straight into the cache by `duc-hdc convert ... --out $DUC_HDC_HOME/..`
                doc = write_hash_sidecar(path, name=entry.name, source="found in cache")
                logger.info("registered %s for %r (sha256 %s)", path, entry.name, doc["sha256"])
                return path
            actual = sha256sum(path)
            if actual == doc["sha256"]:
                return path
            raise WeightsNotAvailableError(
                "{} is corrupted: sha256 {}, but {} was recorded in {} when it was registered. "
                "It cannot be downloaded again: {}".format(
                    path, actual, doc["sha256"], hash_sidecar(path),
                    local_instructions(entry, home)))
    raise WeightsNotAvailableError("no weights for {!r} in {}: {}".format(
        entry.name, home, local_instructions(entry, home)))


def register_local(name, params_path, root=None, link=False):
    """Put a locally produced file into the cache as the weights of zoo entry ``name``.

    The file is copied (or hard-linked with ``link=True``) into the cache under the entry's
    file name, atomically, with its sha256 recorded in ``FILE.sha256.json``; the model-settings
    sidecar ``FILE.json`` written by ``duc-hdc convert`` is copied along when present. A file
    already at the cache path is registered in place.

    Parameters
    ----------
    name : str
        Zoo name (a ``local`` entry such as ``duc_hdc_resnet101_cityscapes_tusimple``, or a
        ``url`` entry, whose known sha256 the file must then match).
    params_path : str
        The file to register.
    root : str, optional
        Cache directory.
    link : bool
        Hard-link instead of copying (same file system only; falls back to copying).

    Returns
    -------
    str
        The path in the cache.
    """
    entry = get_entry(name)
    if entry.source == "gluoncv":
        raise ValueError("{!r} is managed by GluonCV's model store; it cannot be registered "
                         "locally".format(name))
    if not os.path.isfile(params_path):
        raise FileNotFoundError("cannot register {!r}: {} is not a file".format(name,
                                                                               params_path))
    home = get_home(root)
    dest = os.path.join(home, entry.file_name)
    digest = sha256sum(params_path)
    if entry.sha256 is not None and digest != entry.sha256:
        raise ChecksumError("{} has sha256 {}, but zoo entry {!r} expects {}".format(
            params_path, digest, name, entry.sha256), url=None)
    with file_lock(dest):
        if not (os.path.exists(dest) and os.path.samefile(params_path, dest)):
            with atomic_path(dest) as tmp:
                linked = False
                if link:
                    try:
                        os.link(params_path, tmp)
                        linked = True
                    except OSError as e:
                        logger.info("cannot hard-link %s (%s); copying", params_path, e)
                if not linked:
                    shutil.copyfile(params_path, tmp)
            settings = sidecar_path(params_path)
            if os.path.exists(settings):
                with atomic_path(sidecar_path(dest)) as tmp:
                    shutil.copyfile(settings, tmp)
        doc = write_hash_sidecar(dest, name=name, source=os.path.abspath(params_path))
        if doc["sha256"] != digest:
            raise ChecksumError("{} changed while it was registered (sha256 {} then {})".format(
                params_path, digest, doc["sha256"]), url=None)
    logger.info("registered %s as %r (sha256 %s)", dest, name, digest)
    return dest
