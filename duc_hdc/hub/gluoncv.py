"""ImageNet backbones from GluonCV's model store, or from a mirror of its archives.

The archive ``<name>-<sha1[:8]>.zip`` comes from GluonCV's store (``$MXNET_GLUON_REPO`` or
GluonCV's default, ``.../gluon/models/``) or from a mirror (``base_url=`` or
``$DUC_HDC_BASE_URL``, any scheme urllib reads, including ``file://``); it is downloaded with
:func:`duc_hdc.hub.download.download` (timeout, retries, one-line errors naming the URL),
extracted and checked with GluonCV's SHA-1 into the cache GluonCV reads, under GluonCV's lock
file ``<stem>.lock``, which stays (GluonCV does not re-check a lock file it opened).
"""
import hashlib
import logging
import os
import shutil
import zipfile

from ..fileio import atomic_path
from .download import download, file_lock
from .entries import mirror_base
from .errors import ChecksumError, DownloadError, UnknownModelError

__all__ = ["gluoncv_root", "gluoncv_file"]

logger = logging.getLogger(__name__)


def gluoncv_root(home):
    """Where GluonCV keeps its files: ``$MXNET_HOME/models`` when set (GluonCV's own rule, so
    that the mirror path and :func:`get_model_file` find one file), else ``home``."""
    if "MXNET_HOME" in os.environ:
        return os.path.join(os.environ["MXNET_HOME"], "models")
    return home


def _sha1(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gluoncv_file(entry, home, base_url, progress, retries, timeout, retry_delay):
    """Path of the verified ``.params`` of GluonCV backbone ``entry``."""
    from gluoncv.model_zoo import model_store

    gluon_name = entry.name
    sha1 = model_store._model_sha1.get(gluon_name)
    if sha1 is None:
        raise UnknownModelError("GluonCV's model store has no {!r}".format(gluon_name))
    if sha1 != entry.sha1:
        logger.warning("GluonCV's sha1 for %s is %s, the zoo entry says %s; using GluonCV's",
                       gluon_name, sha1, entry.sha1)
    base = mirror_base(base_url)
    if not base:  # GluonCV's store, where its get_model_file would look
        base = os.environ.get("MXNET_GLUON_REPO", model_store.apache_repo_url)
        base = base.rstrip("/") + "/gluon/models"
    root = gluoncv_root(home)
    os.makedirs(root, exist_ok=True)
    stem = "{}-{}".format(gluon_name, sha1[:8])
    params = os.path.join(root, stem + ".params")
    # GluonCV's get_model_file locks the same <stem>.lock and never re-checks the file after
    # locking, so that lock file stays (removing it could let a GluonCV process in beside us,
    # both writing <stem>.zip); every other duc-hdc lock is removed after use
    with file_lock(os.path.join(root, stem), remove=False):
        if os.path.exists(params) and _sha1(params) == sha1:
            return params
        url = base.rstrip("/") + "/" + stem + ".zip"
        archive = os.path.join(root, stem + ".zip")
        if os.path.exists(archive):
            os.remove(archive)
        try:
            download(url, archive, sha256=None, progress=progress, retries=retries,
                     timeout=timeout, retry_delay=retry_delay)
        except DownloadError as e:
            raise type(e)("cannot download {!r} (GluonCV ImageNet weights): {}".format(
                gluon_name, e), url=url, transient=e.transient) from e
        try:
            with zipfile.ZipFile(archive) as zf:
                if stem + ".params" not in zf.namelist():
                    raise DownloadError("{} does not contain {}.params (it has {})".format(
                        url, stem, zf.namelist()), url=url)
                with atomic_path(params) as tmp:
                    with open(tmp, "wb") as out, zf.open(stem + ".params") as src:
                        shutil.copyfileobj(src, out)
                    actual = _sha1(tmp)
                    if actual != sha1:
                        raise ChecksumError("sha1 mismatch for {}.params from {}: expected {}, "
                                            "got {}; file deleted".format(stem, url, sha1, actual),
                                            url=url)
        except zipfile.BadZipFile as e:
            raise DownloadError("{} is not a zip archive: {}".format(url, e), url=url) from e
        finally:
            os.remove(archive)
        return params
