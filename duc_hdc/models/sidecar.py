"""The one sidecar convention: the model settings saved beside every set of weights.

Every artifact the project writes carries a JSON sidecar (``format: duc-hdc-model``) with the
settings that rebuild its network (``model``: depth, classes, cell width, normalization, ...):

- Gluon weights ``FILE.params`` (training's ``final``/``best``, checkpoints, converted release or
  ONNX-zoo weights) -> ``FILE.json``;
- exports and INT8 models ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` -> ``PREFIX.json``,
  with ``kind`` ``duc-hdc-export`` or ``duc-hdc-int8``.

The normalization in ``model.mean`` / ``model.std`` is on the 0..255 RGB scale, and the sidecar
says so (``normalization_scale: "0-255"``); there is no other scale and no guessing.
"""
import json
import logging
import os
import re

from ..fileio import atomic_json

log = logging.getLogger(__name__)

FORMAT = "duc-hdc-model"
#: the version of the sidecars this duc-hdc writes (and the newest it reads)
VERSION = 1
NORMALIZATION_SCALE = "0-255"
_EPOCH_SUFFIX = re.compile(r"-\d{4}\.params$")


class SidecarError(ValueError):
    """A sidecar is missing, unreadable or not a duc-hdc model sidecar; names the file."""


def sidecar_path(params_path):
    """The sidecar of a weights file: ``FILE.params`` -> ``FILE.json``; for an export or INT8
    model (``PREFIX-0000.params``, ``PREFIX-symbol.json``) ``PREFIX.json``.

    ``FILE.json`` wins when both could apply (a checkpoint ``ckpt-00001200.params``)."""
    path = str(params_path)
    if path.endswith("-symbol.json"):
        return path[:-len("-symbol.json")] + ".json"
    base, ext = os.path.splitext(path)
    own = (base if ext == ".params" else path) + ".json"
    if _EPOCH_SUFFIX.search(path) and not os.path.exists(own):
        return _EPOCH_SUFFIX.sub("", path) + ".json"
    return own


def write_sidecar(params_path, config, path=None, **extra):
    """Write the model settings next to ``params_path`` (or to ``path``), atomically."""
    path = path or sidecar_path(params_path)
    doc = dict(format=FORMAT, version=VERSION, model=config,
               normalization_scale=NORMALIZATION_SCALE, **extra)
    return atomic_json(path, doc)


def retire_artifact(prefix):
    """Before new files replace an export or INT8 model at ``prefix``: remove its sidecar
    ``PREFIX.json`` (the new one is written last, so an interrupted write leaves files the loader
    refuses, never new weights under the old settings and measurements) and its ``PREFIX.onnx``
    (converted from the weights being replaced; an ONNX export writes it anew). Returns the
    paths removed."""
    removed = []
    for path in (prefix + ".json", prefix + ".onnx"):
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    if prefix + ".onnx" in removed:
        log.warning("removed %s.onnx: it was converted from the weights this export replaces",
                    prefix)
    return removed


def read_sidecar(path, what=None):
    """The sidecar document at ``path``; :class:`SidecarError` naming the file when it is
    missing, not JSON, not a mapping or has no ``model`` settings.

    ``what`` names the weights the sidecar belongs to (for the message)."""
    owner = " (the settings of %s)" % what if what else ""
    if not os.path.isfile(path):
        raise SidecarError("%s is missing%s: it holds the model settings; pass the model name "
                           "(--model NAME) or the recipe (--config C) instead" % (path, owner))
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SidecarError("%s%s is not valid JSON (%s)" % (path, owner, e)) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise SidecarError("%s%s is not a duc-hdc model sidecar: expected a JSON object with the "
                           "'model' settings" % (path, owner))
    version = doc.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise SidecarError("%s%s: version %r; this duc-hdc reads model settings up to version %d "
                           "(written by a newer duc-hdc? update it)" % (path, owner, version,
                                                                        VERSION))
    scale = doc.get("normalization_scale", NORMALIZATION_SCALE)
    if scale != NORMALIZATION_SCALE:
        raise SidecarError("%s: normalization_scale %r; duc-hdc normalizes on the %s scale"
                           % (path, scale, NORMALIZATION_SCALE))
    return doc
