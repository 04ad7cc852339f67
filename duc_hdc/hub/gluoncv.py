"""ImageNet backbones from GluonCV's model store, or from a mirror of its archives.

Without a mirror, :func:`gluoncv.model_zoo.model_store.get_model_file` fetches and checks the
file (its own SHA-1 check and lock). A mirror (``base_url=`` or ``$DUC_HDC_BASE_URL``) holds
GluonCV's archives ``<name>-<sha1[:8]>.zip`` (its store's layout, any scheme urllib reads,
including ``file://``); they are downloaded with :func:`duc_hdc.hub.download.download`,
extracted and checked as GluonCV does, under GluonCV's own lock file so that both can share
one cache.
"""
import hashlib
import logging
import os
import shutil
import zipfile

from ..fileio import atomic_path
from .download import download, file_lock
from .entries import ENV_BASE_URL
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
    base = base_url or os.environ.get(ENV_BASE_URL)
    if not base:
        return model_store.get_model_file(gluon_name, root=home)
    root = gluoncv_root(home)
    os.makedirs(root, exist_ok=True)
    stem = "{}-{}".format(gluon_name, sha1[:8])
    params = os.path.join(root, stem + ".params")
    # GluonCV's get_model_file locks <stem>.lock with portalocker.Lock and never re-checks the
    # file after locking, so that lock file must stay (removing it could let two holders in)
    with file_lock(os.path.join(root, stem), remove=False):
        if os.path.exists(params) and _sha1(params) == sha1:
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
