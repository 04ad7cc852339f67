"""Zoo entries: name -> (where the file comes from, its checksum, the model settings to use it).

Every entry of :data:`MODELS` carries what is needed to *use* the file, not only to fetch it: the
``model`` name for :func:`duc_hdc.get_model`, ``classes``, ``cell_width``, the input
normalization (``mean`` / ``std``, RGB on the 0..255 scale, from
:data:`duc_hdc.normalization.NORMALIZATION`), the dataset and the reported metric with its
protocol. See :mod:`duc_hdc.hub.zoo` for the three sources and the cache.
"""
import dataclasses
import os
import urllib.parse
from typing import Optional, Tuple

from ..normalization import NORMALIZATION
from .errors import UnknownModelError

__all__ = ["ZooEntry", "MODELS", "ENV_HOME", "ENV_BASE_URL", "DEFAULT_HOME", "get_home",
           "GLUONCV_SHA1", "list_models", "get_entry", "describe", "resolve_urls",
           "local_instructions"]

ENV_HOME = "DUC_HDC_HOME"
ENV_BASE_URL = "DUC_HDC_BASE_URL"
DEFAULT_HOME = os.path.join("~", ".duc_hdc", "models")


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
    mean : tuple of 3 float
        Input normalization, RGB, 0..255 scale: ``x = (img - mean) / std``.
    std : tuple of 3 float or None
        None: no scaling (the release's preprocessing).
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
    std: Optional[Tuple[float, float, float]]
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


# The release's preprocessing (TuSimple-DUC configs/test/test_full_image.cfg: RGB minus the mean,
# no scaling) and GluonCV's ImageNet one, defined once in the network module.
_TUSIMPLE = NORMALIZATION["tusimple"]
_IMAGENET = NORMALIZATION["v1s"]

#: GluonCV's SHA-1 of its v1s backbones (gluoncv.model_zoo.model_store._model_sha1); copied so
#: that listing the zoo does not import gluoncv. tests/test_zoo.py checks the copy.
GLUONCV_SHA1 = {
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


def _norm(values):
    return None if values is None else tuple(float(v) for v in values)


def _builtin_entries():
    entries = []
    for depth in (50, 101, 152):
        name = "resnet{}_v1s".format(depth)
        sha1 = GLUONCV_SHA1[name]
        entries.append(ZooEntry(
            name=name, kind="params", source="gluoncv",
            file_name="{}-{}.params".format(name, sha1[:8]), sha1=sha1,
            model=None, classes=1000, cell_width=None,
            mean=_norm(_IMAGENET["mean"]), std=_norm(_IMAGENET["std"]), dataset="ImageNet-1k",
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
        mean=_norm(_TUSIMPLE["mean"]), std=_norm(_TUSIMPLE["std"]), dataset="Cityscapes",
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
        mean=_norm(_TUSIMPLE["mean"]), std=_norm(_TUSIMPLE["std"]), dataset="Cityscapes",
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
        "  normalization (RGB, 0..255): mean {}  std {}".format(
            e.mean, e.std or "none (no scaling)"),
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
        lines.append("  not downloadable: " + local_instructions(e, home))
    return "\n".join(lines)


#: what a mirror may be (``base_url=``, ``--base-url``, ``$DUC_HDC_BASE_URL``)
MIRROR_SCHEMES = ("https", "http", "file")


def mirror_base(base_url=None):
    """The mirror in use: ``base_url``, else ``$DUC_HDC_BASE_URL``, else None.

    Raises
    ------
    ValueError
        It is no ``https://``, ``http://`` or ``file://`` URL (urllib's own words for a plain
        path are "unknown url type"), before any download is tried.
    """
    given = base_url or os.environ.get(ENV_BASE_URL)
    if not given:
        return None
    scheme = urllib.parse.urlsplit(given).scheme.lower()
    if scheme not in MIRROR_SCHEMES:
        source = ("--base-url %s" % given if base_url else "$%s=%s" % (ENV_BASE_URL, given))
        hint = ("; a local folder is file://%s" % os.path.abspath(os.path.expanduser(given))
                if not scheme else "")
        raise ValueError("%s: a mirror is a URL starting with https://, http:// or file://%s"
                         % (source, hint))
    return given


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
    base = mirror_base(base_url)
    if base:
        return [base.rstrip("/") + "/" + entry.file_name]
    return list(entry.urls)


def local_instructions(entry, home):
    """How to produce the weights of a ``local`` entry (they cannot be downloaded)."""
    return ("the authors' files are not hosted for automatic download. Fetch the original "
            "TuSimple-DUC Cityscapes checkpoint (ResNet_DUC_HDC_CityScapes-symbol.json and "
            "-0020.params, linked from github.com/TuSimple/TuSimple-DUC), then run: duc-hdc "
            "convert tusimple --prefix PATH/ResNet_DUC_HDC_CityScapes --epoch 20 --classes {} "
            "--out {}".format(entry.classes, os.path.join(home, entry.file_name)))
