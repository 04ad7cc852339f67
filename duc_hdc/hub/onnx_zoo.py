"""ONNX-zoo entries: fetch the ``.onnx`` file, convert it once to duc-hdc parameters, cache both.

The converted ``.params`` carries a hash record naming the sha256 of the ONNX file it came from;
it is rebuilt when that record is missing, does not match, or names another source.
"""
import logging
import os

from .cache import fetch, verified_by_sidecar, write_hash_sidecar
from .download import file_lock
from .errors import WeightsNotAvailableError

__all__ = ["converted_onnx"]

logger = logging.getLogger(__name__)


def converted_onnx(entry, home, **fetch_kwargs):
    """Path of the converted parameters of ONNX entry ``entry`` in ``home``.

    ``fetch_kwargs`` go to :func:`duc_hdc.hub.cache.fetch` (mirror, trust, retries, timeout).
    """
    params = os.path.join(home, entry.params_file)
    with file_lock(params):
        if verified_by_sidecar(params, source_sha256=entry.sha256):
            return params
        onnx_path = fetch(entry.name, root=home, **fetch_kwargs)
        from .convert import convert_onnx  # heavy (mxnet, onnx): only when converting

        logger.info("converting %s to %s", onnx_path, params)
        convert_onnx(onnx_path, entry.classes, params)
        if not os.path.exists(params):
            raise WeightsNotAvailableError("convert_onnx({}, {}, {}) did not write {}".format(
                onnx_path, entry.classes, params, params))
        write_hash_sidecar(params, name=entry.name, source=onnx_path,
                           source_sha256=entry.sha256)
        return params
