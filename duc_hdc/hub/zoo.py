"""Pretrained weights: name -> (URL, checksum, model settings), with a verified local cache.

Every entry of :data:`MODELS` carries what is needed to *use* the file, not only to fetch it: the
``model`` name for :func:`duc_hdc.get_model`, ``classes``, ``cell_width``, the input
normalization (``mean`` / ``std``, RGB on the 0..255 scale: ``x = (img - mean) / std``), the
dataset and the reported metric with its protocol.

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

Cache: ``$DUC_HDC_HOME`` (default ``~/.duc_hdc/models``) or ``root=``. Downloads stream to a
temporary file in the cache directory, are verified, then renamed into place (atomic); an
inter-process lock (``fcntl.flock`` on ``FILE.lock``) makes concurrent downloads of one file safe.
A mirror or an offline copy is selected with ``base_url=`` or ``$DUC_HDC_BASE_URL``
(``https://``, ``http://`` or ``file://``): it replaces everything before the file name.
"""
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import Optional, Tuple

__all__ = [
    "ZooEntry", "MODELS", "DownloadError", "ChecksumError", "IncompleteDownloadError",
    "UnknownModelError", "WeightsNotAvailableError", "get_home", "list_models", "get_entry",
    "describe", "resolve_urls", "download", "sha256sum", "fetch", "get_weights",
    "register_local", "is_cached", "weights_for_model",
]

logger = logging.getLogger(__name__)

ENV_HOME = "DUC_HDC_HOME"
ENV_BASE_URL = "DUC_HDC_BASE_URL"
ENV_LOCK_TIMEOUT = "DUC_HDC_LOCK_TIMEOUT"
DEFAULT_HOME = os.path.join("~", ".duc_hdc", "models")
#: suffix of the JSON file recording the sha256 of a converted or registered file
HASH_SIDECAR_SUFFIX = ".sha256.json"

_CHUNK = 1 << 20
# HTTP statuses worth retrying; anything else (404, 403, ...) fails at once
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


# ---------------------------------------------------------------------------------- errors
class DownloadError(RuntimeError):
    """A download failed; the message names the URL and what went wrong.

    Attributes
    ----------
    url : str
    transient : bool
        Whether retrying may help (connection errors, truncation, HTTP 5xx).
    """

    def __init__(self, message, url=None, transient=False):
        super().__init__(message)
        self.url = url
        self.transient = transient


class ChecksumError(DownloadError):
    """The downloaded (or cached) bytes do not have the expected hash."""


class IncompleteDownloadError(DownloadError):
    """The transfer ended before Content-Length bytes arrived."""


class UnknownModelError(LookupError):
    """No zoo entry (or no entry for a model) of that name; the message lists the known ones."""


class WeightsNotAvailableError(RuntimeError):
    """The weights cannot be obtained automatically (no URL, no hash, corrupted local copy)."""


# ---------------------------------------------------------------------------------- entries
@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One set of pretrained weights and the settings needed to use it.

    Attributes
    ----------
    name : str
        Zoo name, as given to :func:`get_weights` and ``duc-hdc download``.
    kind : {'params', 'onnx', 'tusimple'}
        What the file is: Gluon ``.params``; an ONNX graph (converted on first use); weights
        converted from the original release's checkpoint.
    source : {'url', 'gluoncv', 'local'}
        How the file is obtained (see the module docstring).
    file_name : str
        Name of the downloaded (or registered) file in the cache.
    urls : tuple of str
        Download locations, primary first (empty for ``gluoncv`` and ``local``).
    sha256 : str or None
        Hex digest of the file; entries without it are refused unless explicitly trusted.
    size : int or None
        File size in bytes, when known.
    model : str or None
        Name for :func:`duc_hdc.get_model` (``None`` for ImageNet backbones).
    classes : int
    cell_width : int or None
        DUC output stride relative to the input (None for backbones).
    mean, std : tuple of 3 float
        Input normalization, RGB, 0..255 scale.
    dataset : str
    metric : dict
        ``name``, ``value`` (None if not recorded), ``split`` and ``protocol`` of the reported
        number, and where it was reported.
    description : str
    params_file : str or None
        For ``kind='onnx'``: cache name of the converted parameters.
    sha1 : str or None
        For ``source='gluoncv'``: GluonCV's SHA-1 of the ``.params`` file.
    """

    name: str
    kind: str
    source: str
    file_name: str
    model: Optional[str]
    classes: int
    cell_width: Optional[int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    dataset: str
    metric: dict
    description: str = ""
    urls: Tuple[str, ...] = ()
    sha256: Optional[str] = None
    size: Optional[int] = None
    params_file: Optional[str] = None
    sha1: Optional[str] = None

    def __post_init__(self):
        if self.kind not in ("params", "onnx", "tusimple"):
            raise ValueError("zoo entry {}: kind must be 'params', 'onnx' or 'tusimple', got "
                             "{!r}".format(self.name, self.kind))
        if self.source not in ("url", "gluoncv", "local"):
            raise ValueError("zoo entry {}: source must be 'url', 'gluoncv' or 'local', got "
                             "{!r}".format(self.name, self.source))
        if self.sha256 is not None and (len(self.sha256) != 64 or
                                        any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError("zoo entry {}: sha256 must be 64 lowercase hex digits, got "
                             "{!r}".format(self.name, self.sha256))
        if self.kind == "onnx" and not self.params_file:
            raise ValueError("zoo entry {}: an ONNX entry needs params_file".format(self.name))

    def to_dict(self):
        """The entry as a JSON-ready dict."""
        return dataclasses.asdict(self)


# The original release's preprocessing (TuSimple-DUC configs/test/test_full_image.cfg):
# RGB minus this mean, no scaling.
_TUSIMPLE_MEAN = (122.675, 116.669, 104.008)
_NO_SCALE = (1.0, 1.0, 1.0)
# GluonCV ImageNet backbones: (img / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)

# GluonCV's SHA-1 of its v1s backbones (gluoncv.model_zoo.model_store._model_sha1); copied so
# that listing the zoo does not import gluoncv (and mxnet). tests/test_zoo.py checks the copy.
_GLUONCV_SHA1 = {
    "resnet50_v1s": "25a187fa281ddc98afbcd0cc0f0646885b874b80",
    "resnet101_v1s": "bd93a83c05f709a803b1221aeff0b028e6eebb03",
    "resnet152_v1s": "cf74621d988ad06c6c6aa44f5597e5b600a966cc",
}

# onnx/models keeps ResNet101-DUC-12.onnx in Git LFS; the pointer file at this commit
# (vision/object_detection_segmentation/duc/model/ResNet101-DUC-12.onnx) reads
# "oid sha256:11ebd46b...e9b6 / size 260671144". The URLs pin that commit.
_ONNX_DUC_COMMIT = "e0cb524b3943510e979a00f799b2ca81061399ef"
_ONNX_DUC_PATH = "vision/object_detection_segmentation/duc/model/ResNet101-DUC-12.onnx"
_ONNX_DUC_SHA256 = "11ebd46b66706e8bb45e74f67a616f0f61029014e99bd8ea7e55deb74a61e9b6"


def _builtin_entries():
    entries = []
    for depth in (50, 101, 152):
        name = "resnet{}_v1s".format(depth)
        sha1 = _GLUONCV_SHA1[name]
        entries.append(ZooEntry(
            name=name, kind="params", source="gluoncv",
            file_name="{}-{}.params".format(name, sha1[:8]), sha1=sha1,
            model=None, classes=1000, cell_width=None,
            mean=_IMAGENET_MEAN, std=_IMAGENET_STD, dataset="ImageNet-1k",
            metric=dict(name="top-1 accuracy", value=None, split="ImageNet-1k val",
                        protocol="single 224x224 center crop; value not recorded here, see "
                                 "the GluonCV classification model zoo table",
                        reported_by="GluonCV"),
            description="GluonCV ResNet-{}-v1s ImageNet weights (deep 3x3 stem): the "
                        "backbone initialization for training 'v1s' DUC-HDC variants.".format(
                            depth)))
    entries.append(ZooEntry(
        name="duc_hdc_resnet101_cityscapes_onnx", kind="onnx", source="url",
        file_name="ResNet101-DUC-12.onnx",
        urls=(
            "https://github.com/onnx/models/raw/{}/{}".format(_ONNX_DUC_COMMIT, _ONNX_DUC_PATH),
            "https://media.githubusercontent.com/media/onnx/models/{}/{}".format(
                _ONNX_DUC_COMMIT, _ONNX_DUC_PATH),
            "https://huggingface.co/onnxmodelzoo/legacy_models/resolve/main/validated/"
            "vision/object_detection_segmentation/duc/model/ResNet101-DUC-12.onnx",
        ),
        sha256=_ONNX_DUC_SHA256, size=260671144,
        params_file="duc_hdc_resnet101_cityscapes_onnx-{}.params".format(_ONNX_DUC_SHA256[:8]),
        model="duc_hdc_resnet101_cityscapes", classes=19, cell_width=2,
        mean=_TUSIMPLE_MEAN, std=_NO_SCALE, dataset="Cityscapes",
        metric=dict(name="mIoU", value=81.92, split="Cityscapes val (500 images)",
                    protocol="as reported by the ONNX model zoo README for ResNet101_DUC_HDC-12 "
                             "(MXNet inference, its duc-validation notebook); not re-measured "
                             "here",
                    reported_by="onnx/models"),
        description="ONNX model zoo ResNet101_DUC_HDC (opset 12): the original release's "
                    "Cityscapes model exported to ONNX; converted to duc-hdc parameters on "
                    "first use."))
    entries.append(ZooEntry(
        name="duc_hdc_resnet101_cityscapes_tusimple", kind="tusimple", source="local",
        file_name="duc_hdc_resnet101_cityscapes_tusimple.params",
        model="duc_hdc_resnet101_cityscapes", classes=19, cell_width=2,
        mean=_TUSIMPLE_MEAN, std=_NO_SCALE, dataset="Cityscapes",
        metric=dict(name="mIoU", value=80.1, split="Cityscapes test",
                    protocol="multi-scale testing (79.1 single-scale), as reported in the "
                             "TuSimple-DUC README",
                    reported_by="TuSimple-DUC"),
        description="The authors' ResNet101-DUC-HDC Cityscapes checkpoint "
                    "(ResNet_DUC_HDC_CityScapes, epoch 20), converted from the original "
                    "release. Not downloadable: fetch the authors' files and convert them."))
    return {e.name: e for e in entries}


#: name -> :class:`ZooEntry`; add entries for private mirrors or models here.
MODELS = _builtin_entries()


# ---------------------------------------------------------------------------------- lookup
def get_home(root=None):
    """Return (and create) the cache directory: ``root``, ``$DUC_HDC_HOME`` or the default."""
    home = root or os.environ.get(ENV_HOME) or DEFAULT_HOME
    home = os.path.abspath(os.path.expanduser(home))
    os.makedirs(home, exist_ok=True)
    return home


def list_models():
    """Names of all zoo entries, in registry order."""
    return list(MODELS)


def get_entry(name):
    """Return the :class:`ZooEntry` called ``name``.

    Raises
    ------
    UnknownModelError
        With the list of known names.
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UnknownModelError("unknown pretrained weights {!r}; known names: {}".format(
            name, ", ".join(sorted(MODELS)))) from None


def describe(name):
    """A human-readable, multi-line description of one entry (for ``duc-hdc download``)."""
    e = get_entry(name)
    metric = e.metric or {}
    value = metric.get("value")
    lines = [
        "{}: {}".format(e.name, e.description),
        "  kind: {}   source: {}   file: {}".format(e.kind, e.source, e.file_name),
        "  model: {}   classes: {}   cell_width: {}".format(e.model, e.classes, e.cell_width),
        "  normalization (RGB, 0..255): mean {}  std {}".format(e.mean, e.std),
        "  dataset: {}".format(e.dataset),
        "  reported {}: {} on {} ({}; {})".format(
            metric.get("name"), "n/a" if value is None else value, metric.get("split"),
            metric.get("protocol"), metric.get("reported_by")),
    ]
    if e.source == "url":
        lines.append("  urls: {}".format(", ".join(e.urls) or "none"))
        lines.append("  sha256: {}".format(e.sha256 or "NOT KNOWN (refused unless trusted)"))
    elif e.source == "gluoncv":
        lines.append("  gluoncv sha1: {}".format(e.sha1))
    else:
        home = os.path.abspath(os.path.expanduser(os.environ.get(ENV_HOME) or DEFAULT_HOME))
        lines.append("  not downloadable: " + _local_instructions(e, home))
    return "\n".join(lines)


def resolve_urls(entry, base_url=None):
    """Download locations of ``entry``: the override (``base_url`` or ``$DUC_HDC_BASE_URL``)
    joined with the file name, else the entry's own URLs.

    Parameters
    ----------
    entry : ZooEntry or str
    base_url : str, optional
        Replaces everything before the file name, e.g. ``file:///mnt/mirror`` or
        ``https://mirror.example/duc``.

    Returns
    -------
    list of str
    """
    if isinstance(entry, str):
        entry = get_entry(entry)
    base = base_url or os.environ.get(ENV_BASE_URL)
    if base:
        return [base.rstrip("/") + "/" + entry.file_name]
    return list(entry.urls)


# ---------------------------------------------------------------------------------- machinery
def sha256sum(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(lock_path, timeout=None):
    """Exclusive inter-process lock on ``lock_path`` (``fcntl.flock``), waiting at most
    ``timeout`` seconds (default ``$DUC_HDC_LOCK_TIMEOUT`` or 3600)."""
    if timeout is None:
        timeout = float(os.environ.get(ENV_LOCK_TIMEOUT, 3600))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if not waited:
                    logger.info("waiting for another process holding %s", lock_path)
                    waited = True
                if time.monotonic() > deadline:
                    raise TimeoutError("gave up after {:.0f} s waiting for the lock {} (held by "
                                       "another download?); delete it if no other process is "
                                       "running".format(timeout, lock_path)) from None
                time.sleep(0.05)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _lock_for(path):
    return path + ".lock"


def _download_once(url, path, sha256, progress, timeout, size):
    """One attempt: stream ``url`` to a temporary file beside ``path``, verify, rename."""
    from tqdm import tqdm

    directory, base = os.path.split(path)
    tmp = None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "duc-hdc"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.strip().isdigit() else None
            fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + base + ".", suffix=".part")
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as f, tqdm(
                    total=expected if expected is not None else size, unit="B", unit_scale=True,
                    unit_divisor=1024, desc=base, disable=not progress, leave=False) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        if expected is not None and received != expected:
            raise IncompleteDownloadError(
                "truncated transfer from {}: received {} of {} bytes (Content-Length); partial "
                "file deleted".format(url, received, expected), url=url, transient=True)
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise ChecksumError(
                "sha256 mismatch for {} ({} bytes): expected {}, got {}; file deleted. The "
                "server or mirror holds a different file".format(url, received, sha256, actual),
                url=url)
        if sha256 is None:
            logger.warning("%s was not verified (no sha256 given); its sha256 is %s", url, actual)
        os.replace(tmp, path)
        tmp = None
        logger.info("downloaded %s -> %s (%d bytes)", url, path, received)
        return path
    except urllib.error.HTTPError as e:
        raise DownloadError("HTTP {} {} for {}".format(e.code, e.reason, url), url=url,
                            transient=e.code in _TRANSIENT_HTTP) from e
    except urllib.error.URLError as e:
        missing = isinstance(e.reason, (FileNotFoundError, IsADirectoryError, PermissionError))
        raise DownloadError("cannot open {}: {}".format(url, e.reason), url=url,
                            transient=not missing) from e
    except http.client.IncompleteRead as e:
        raise IncompleteDownloadError(
            "truncated transfer from {}: connection closed with {} bytes still expected; "
            "partial file deleted".format(url, e.expected), url=url, transient=True) from e
    except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as e:
        raise DownloadError("network error while downloading {}: {!r}".format(url, e), url=url,
                            transient=True) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def download(url, path, sha256=None, progress=True, retries=2, timeout=60.0, retry_delay=1.0,
             size=None):
    """Download ``url`` to ``path`` safely: locked, streamed, verified, renamed atomically.

    Parameters
    ----------
    url : str
        ``http://``, ``https://`` or ``file://``.
    path : str
        Destination. If it already exists with the expected ``sha256`` nothing is fetched; if
        its hash differs it is deleted and downloaded again.
    sha256 : str, optional
        Expected hex digest. Without it an existing file is reused as is.
    progress : bool
        Show a tqdm bar.
    retries : int
        Extra attempts after a transient failure (connection error, truncation, HTTP 5xx/429).
        A wrong hash or HTTP 4xx fails at once.
    timeout : float
        Socket timeout in seconds.
    retry_delay : float
        Seconds before the first retry, doubled for each further one.
    size : int, optional
        Expected size, for the progress bar when the server sends no Content-Length.

    Returns
    -------
    str
        ``path`` (absolute).

    Raises
    ------
    ChecksumError, IncompleteDownloadError, DownloadError
        The message names the URL and the expected vs actual hash or byte count; no partial
        file is left behind.
    """
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _file_lock(_lock_for(path)):
        if os.path.exists(path):
            if sha256 is None:
                logger.info("%s exists and no sha256 was given; not downloading again", path)
                return path
            actual = sha256sum(path)
            if actual == sha256.lower():
                return path
            logger.warning("cached %s has sha256 %s, expected %s: deleting it and downloading %s "
                           "again", path, actual, sha256, url)
            os.remove(path)
        attempts = int(retries) + 1
        for attempt in range(attempts):
            try:
                return _download_once(url, path, sha256, progress, timeout, size)
            except DownloadError as e:
                if not e.transient:
                    raise
                if attempt + 1 == attempts:
                    raise type(e)("{} (gave up after {} attempt{})".format(
                        e, attempts, "s" if attempts > 1 else ""), url=url,
                        transient=True) from e
                delay = retry_delay * 2 ** attempt
                logger.warning("%s; retry %d of %d in %.1f s", e, attempt + 1, retries, delay)
                time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------- sidecars
def _hash_sidecar(path):
    return path + HASH_SIDECAR_SUFFIX


def _model_sidecar(params_path):
    # duc_hdc.models.network.sidecar_path: FILE.params -> FILE.json (the model settings)
    base, ext = os.path.splitext(params_path)
    return (base if ext == ".params" else params_path) + ".json"


def _write_hash_sidecar(path, **info):
    doc = dict(file=os.path.basename(path), sha256=sha256sum(path),
               size=os.path.getsize(path), created=time.strftime("%Y-%m-%dT%H:%M:%S"), **info)
    sidecar = _hash_sidecar(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(sidecar), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
    os.replace(tmp, sidecar)
    return doc


def _read_hash_sidecar(path):
    sidecar = _hash_sidecar(path)
    if not os.path.exists(sidecar):
        return None
    try:
        with open(sidecar) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or "sha256" not in doc:
            raise ValueError("no 'sha256' key")
        return doc
    except ValueError as e:
        logger.warning("ignoring unreadable %s: %s", sidecar, e)
        return None


def _verified_by_sidecar(path, **expect):
    """True if ``path`` exists and matches the sha256 (and ``expect`` fields) of its sidecar."""
    if not os.path.exists(path):
        return False
    doc = _read_hash_sidecar(path)
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
                       doc["sha256"], _hash_sidecar(path))
        return False
    return True


# ---------------------------------------------------------------------------------- public API
def _check_trusted(entry, allow_unverified):
    if entry.sha256 is None and not allow_unverified:
        raise WeightsNotAvailableError(
            "zoo entry {!r} has no known sha256, so its download cannot be verified; refusing "
            "to use it. Pass allow_unverified=True (duc-hdc download {} --trust) to accept it "
            "anyway".format(entry.name, entry.name))


def fetch(name, root=None, base_url=None, allow_unverified=False, progress=True, retries=2,
          timeout=60.0, retry_delay=1.0):
    """Download (or find in the cache) the raw file of a ``url`` entry, verified.

    For ONNX entries this is the ``.onnx`` file; :func:`get_weights` converts it.

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
        Passed to :func:`download`.

    Returns
    -------
    str
        Path of the verified file in the cache.
    """
    entry = get_entry(name)
    if entry.source != "url":
        raise ValueError("zoo entry {!r} is not downloaded from a URL (source {!r}); use "
                         "get_weights()".format(name, entry.source))
    _check_trusted(entry, allow_unverified)
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


def _local_instructions(entry, home):
    return ("the authors' files are not hosted for automatic download. Fetch the original "
            "TuSimple-DUC Cityscapes checkpoint (ResNet_DUC_HDC_CityScapes-symbol.json and "
            "-0020.params, linked from github.com/TuSimple/TuSimple-DUC), then run: duc-hdc "
            "convert tusimple --prefix PATH/ResNet_DUC_HDC_CityScapes --epoch 20 --classes {} "
            "--out {}".format(entry.classes, os.path.join(home, entry.file_name)))


def _local_file(entry, home):
    path = os.path.join(home, entry.file_name)
    with _file_lock(_lock_for(path)):
        if os.path.exists(path):
            doc = _read_hash_sidecar(path)
            if doc is None:
                # written straight into the cache by `duc-hdc convert ... --out $DUC_HDC_HOME/..`
                doc = _write_hash_sidecar(path, name=entry.name, source="found in cache")
                logger.info("registered %s for %r (sha256 %s)", path, entry.name, doc["sha256"])
                return path
            actual = sha256sum(path)
            if actual == doc["sha256"]:
                return path
            raise WeightsNotAvailableError(
                "{} is corrupted: sha256 {}, but {} was recorded in {} when it was registered. "
                "It cannot be downloaded again: {}".format(
                    path, actual, doc["sha256"], _hash_sidecar(path),
                    _local_instructions(entry, home)))
    raise WeightsNotAvailableError("no weights for {!r} in {}: {}".format(
        entry.name, home, _local_instructions(entry, home)))


def _converted_onnx(entry, home, **fetch_kwargs):
    params = os.path.join(home, entry.params_file)
    with _file_lock(_lock_for(params)):
        if _verified_by_sidecar(params, source_sha256=entry.sha256):
            return params
        onnx_path = fetch(entry.name, root=home, **fetch_kwargs)
        from .convert import convert_onnx  # heavy (mxnet, onnx): only when converting

        logger.info("converting %s to %s", onnx_path, params)
        convert_onnx(onnx_path, entry.classes, params)
        if not os.path.exists(params):
            raise WeightsNotAvailableError("convert_onnx({}, {}, {}) did not write {}".format(
                onnx_path, entry.classes, params, params))
        _write_hash_sidecar(params, name=entry.name, source=onnx_path,
                            source_sha256=entry.sha256)
        return params


def _gluoncv_root(home):
    # gluoncv.model_zoo.model_store.get_model_file lets $MXNET_HOME override root; keep the
    # same rule in the mirror path so both find one file
    if "MXNET_HOME" in os.environ:
        return os.path.join(os.environ["MXNET_HOME"], "models")
    return home


def _gluoncv_file(entry, home, base_url, progress, retries, timeout, retry_delay):
    from gluoncv.model_zoo import model_store
    from gluoncv.utils import check_sha1

    gluon_name = entry.name
    sha1 = model_store._model_sha1.get(gluon_name)
    if sha1 is None:
        raise UnknownModelError("GluonCV's model store has no {!r}".format(gluon_name))
    if sha1 != entry.sha1:
        logger.warning("GluonCV's sha1 for %s is %s, the zoo entry says %s; using GluonCV's",
                       gluon_name, sha1, entry.sha1)
    base = base_url or os.environ.get(ENV_BASE_URL)
    if not base:
        return model_store.get_model_file(gluon_name, root=home)
    # A mirror holds GluonCV's archive <name>-<sha1[:8]>.zip (its store's layout, any scheme
    # urllib reads, including file://); extract and check it as GluonCV does.
    root = _gluoncv_root(home)
    os.makedirs(root, exist_ok=True)
    stem = "{}-{}".format(gluon_name, sha1[:8])
    params = os.path.join(root, stem + ".params")
    with _file_lock(os.path.join(root, stem + ".lock")):
        if os.path.exists(params) and check_sha1(params, sha1):
            return params
        url = base.rstrip("/") + "/" + stem + ".zip"
        archive = os.path.join(root, stem + ".zip")
        if os.path.exists(archive):
            os.remove(archive)
        download(url, archive, sha256=None, progress=progress, retries=retries, timeout=timeout,
                 retry_delay=retry_delay)
        try:
            with zipfile.ZipFile(archive) as zf:
                if stem + ".params" not in zf.namelist():
                    raise DownloadError("{} does not contain {}.params (it has {})".format(
                        url, stem, zf.namelist()), url=url)
                fd, tmp = tempfile.mkstemp(dir=root, prefix="." + stem + ".", suffix=".part")
                with os.fdopen(fd, "wb") as out, zf.open(stem + ".params") as src:
                    shutil.copyfileobj(src, out)
        except zipfile.BadZipFile as e:
            raise DownloadError("{} is not a zip archive: {}".format(url, e), url=url) from e
        finally:
            os.remove(archive)
        if not check_sha1(tmp, sha1):
            actual = hashlib.sha1(open(tmp, "rb").read()).hexdigest()
            os.remove(tmp)
            raise ChecksumError("sha1 mismatch for {}.params from {}: expected {}, got {}; file "
                                "deleted".format(stem, url, sha1, actual), url=url)
        os.replace(tmp, params)
        return params


def get_weights(name, root=None, base_url=None, allow_unverified=False, progress=True,
                retries=2, timeout=60.0, retry_delay=1.0):
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
    progress, retries, timeout, retry_delay
        Passed to :func:`download`.

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
        return _gluoncv_file(entry, home, base_url, **kwargs)
    if entry.source == "local":
        return _local_file(entry, home)
    if entry.kind == "onnx":
        return _converted_onnx(entry, home, base_url=base_url,
                               allow_unverified=allow_unverified, **kwargs)
    return fetch(name, root=home, base_url=base_url, allow_unverified=allow_unverified, **kwargs)


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
    with _file_lock(_lock_for(dest)):
        if not (os.path.exists(dest) and os.path.samefile(params_path, dest)):
            fd, tmp = tempfile.mkstemp(dir=home, prefix="." + entry.file_name + ".",
                                       suffix=".part")
            os.close(fd)
            try:
                linked = False
                if link:
                    try:
                        os.remove(tmp)
                        os.link(params_path, tmp)
                        linked = True
                    except OSError as e:
                        logger.info("cannot hard-link %s (%s); copying", params_path, e)
                if not linked:
                    shutil.copyfile(params_path, tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            settings = _model_sidecar(params_path)
            if os.path.exists(settings):
                shutil.copyfile(settings, _model_sidecar(dest))
        doc = _write_hash_sidecar(dest, name=name, source=os.path.abspath(params_path))
        if doc["sha256"] != digest:
            raise ChecksumError("{} changed while it was registered (sha256 {} then {})".format(
                params_path, digest, doc["sha256"]), url=None)
    logger.info("registered %s as %r (sha256 %s)", dest, name, digest)
    return dest


def is_cached(name, root=None):
    """Whether usable weights for ``name`` are in the cache (without downloading or hashing)."""
    entry = get_entry(name)
    home = get_home(root)
    if entry.source == "gluoncv":
        return os.path.exists(os.path.join(_gluoncv_root(home), entry.file_name))
    if entry.kind == "onnx":
        return os.path.exists(os.path.join(home, entry.params_file))
    return os.path.exists(os.path.join(home, entry.file_name))


def weights_for_model(model_name, root=None, base_url=None, allow_unverified=False,
                      progress=True):
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
                  progress=progress)
    for entry in candidates:
        if entry.source == "local" and is_cached(entry.name, root):
            return entry, get_weights(entry.name, root=root)
    for entry in candidates:
        if entry.source != "local":
            return entry, get_weights(entry.name, **kwargs)
    return candidates[0], get_weights(candidates[0].name, root=root)
