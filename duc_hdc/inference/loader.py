"""The one loader: every model a user can have -> a network with its normalization and classes.

:func:`load` is what every command (``--model`` / ``--params`` / ``--config``) and the Python API
(:func:`duc_hdc.load`, :func:`duc_hdc.get_model` with ``pretrained=True``,
:meth:`~duc_hdc.inference.segmenter.Segmenter.from_name`) use. It takes:

- a zoo name (``duc-hdc download --list``) or a model name with zoo weights;
- a model or recipe name together with ``params`` (weights without a sidecar);
- a recipe (``config``: packaged name or YAML) together with ``params``;
- ``FILE.params`` with its ``FILE.json`` sidecar: training's ``final``/``best``, a checkpoint,
  converted release or ONNX-zoo weights;
- an export or INT8 model, given as ``PREFIX``, ``PREFIX-0000.params`` or ``PREFIX-symbol.json``.

What it returns has ``classes``, ``cell_width``, ``normalization`` and ``config``: a
:class:`~duc_hdc.models.network.DUCHDC`, or for INT8 an
:class:`~duc_hdc.inference.graphs.InferenceNet`. A wrong or partial artifact raises one
``ValueError`` / ``FileNotFoundError`` naming the file and what is missing or mismatched.
"""
import os

import mxnet as mx
import numpy as np

from ..config import load_config, model_overrides
from ..fileio import read_params
from ..hub import zoo
from ..models.network import DEFAULTS, MODEL_SPECS, build_model, model_names
from ..models.network import resolve_settings as get_model_settings
from ..models.sidecar import SidecarError, read_sidecar, sidecar_path
from .. import runtime
from .compiled import InferenceNet, graph_symbol, load_graph_files
from .export import BF16_EXPORT_KIND, EXPORT_KIND
from .bf16 import BF16_KIND
from .graphs import QUANTIZED_KIND, load_quantized

__all__ = ["load", "load_params_checked", "artifact_prefix", "check_finite", "read_params",
           "REQUIRED_SETTINGS"]


# ------------------------------------------------------------------------------ weights
def _graph_to_structured(net, loaded, path):
    """An export's arg:/aux: names (``<block prefix>backbone_...``) -> ``net``'s structured
    names (``backbone.conv1.0.weight``), matched on the name after the block prefix, which
    differs between the exporting process and this one."""
    by_suffix = {param.name[len(net.prefix):]: name
                 for name, param in net._collect_params_with_prefix().items()}
    out = {}
    for key, value in loaded.items():
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        cut = min((name.find(p) for p in ("backbone_", "head_") if p in name), default=-1)
        if cut < 0 or name[cut:] not in by_suffix:
            raise ValueError("%s does not fit the model its sidecar describes: array %s is no "
                             "parameter of it" % (path, key))
        out[by_suffix[name[cut:]]] = value
    return out


def _mismatch(net, loaded, path):
    """The first difference between ``net``'s parameters and the arrays ``loaded``, or None."""
    expected = net._collect_params_with_prefix()
    for name, param in expected.items():
        if name not in loaded:
            return ("%s does not fit the model: parameter %s (shape %s) is missing from the file "
                    "(it holds %d arrays)" % (path, name, param.shape, len(loaded)))
        saved, want = tuple(loaded[name].shape), tuple(param.shape)
        if len(saved) != len(want) or any(w and w != s for w, s in zip(want, saved)):
            return ("%s does not fit the model: parameter %s has shape %s in the file, the model "
                    "needs %s (different classes, cell_width or width?)" % (path, name, saved,
                                                                           want))
    extra = sorted(k for k in loaded if k not in expected)
    if extra:
        return ("%s does not fit the model: array %s in the file is no parameter of the model "
                "(%d such arrays)" % (path, extra[0], len(extra)))
    return None


def check_finite(arrays, path):
    """Refuse weights holding NaN or infinity, naming the file and the first such array."""
    for name, array in arrays.items():
        if not np.isfinite(array.asnumpy()).all():
            raise ValueError("%s holds non-finite values (NaN or inf) in %s: the weights are "
                             "damaged; use an earlier checkpoint" % (path, name))


def load_params_checked(net, path, ctx=None, graph_names=False, note=None):
    """Load ``path`` into ``net``; errors name the file and the first mismatching parameter.

    ``graph_names``: the file is an export's ``PREFIX-0000.params`` (arg:/aux: names).
    Non-finite weights are refused (:func:`check_finite`). ``note`` is added to a mismatch's
    message (e.g. the settings a sidecar left to their defaults).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError("parameters %s not found" % path)
    loaded = read_params(path)
    try:
        if any(k.startswith(("arg:", "aux:")) for k in loaded):
            if not graph_names:
                raise ValueError(
                    "%s is a symbolic checkpoint (arg:/aux: names) without a duc-hdc export "
                    "sidecar (%s): an original-release checkpoint is converted first (duc-hdc "
                    "convert tusimple --prefix P --epoch E --classes C --out DIR)"
                    % (path, sidecar_path(path)))
            loaded = _graph_to_structured(net, loaded, path)
        problem = _mismatch(net, loaded, path)
        if problem:
            raise ValueError(problem)
    except ValueError as e:
        if not note:
            raise
        raise ValueError("%s; %s" % (e, note)) from None
    check_finite(loaded, path)
    ctx = ctx or mx.cpu()
    params = net._collect_params_with_prefix()
    for name, param in params.items():
        param._load_init(loaded[name], ctx, cast_dtype=True, dtype_source="saved")
    return net


# ------------------------------------------------------------------------------ sidecars
#: model settings every sidecar duc-hdc writes names and that have no default a sidecar may
#: rely on (the others default as in :class:`~duc_hdc.models.network.DUCHDC`)
REQUIRED_SETTINGS = ("depth", "classes", "cell_width", "dilations", "aspp_rates", "variant")
#: what a compiled graph (bf16, int8) further needs from its sidecar: it cannot be rebuilt
_COMPILED_SETTINGS = REQUIRED_SETTINGS + ("mean", "std")


def _sidecar_settings(doc, side, compiled=False):
    """The ``model`` settings of the sidecar ``side``; a partial one is refused naming the
    file and every missing required setting (``compiled``: of a bf16 / int8 graph, which
    also needs the normalization)."""
    settings = doc["model"]
    if not compiled and set(settings) - set(DEFAULTS):
        return settings  # building it names the unknown setting (a typo, not a gap)
    required = _COMPILED_SETTINGS if compiled else REQUIRED_SETTINGS
    missing = [key for key in required if key not in settings]
    if missing:
        raise SidecarError(
            "%s: the model settings lack %s (a duc-hdc sidecar names %s); add %s with the "
            "value%s the weights were trained with" % (
                side, ", ".join(missing), ", ".join(required),
                "it" if len(missing) == 1 else "them", "" if len(missing) == 1 else "s"))
    return settings


def _defaults_note(settings, side):
    """For weights that do not fit: the settings ``side`` left to their defaults, or None."""
    defaulted = [key for key in sorted(DEFAULTS) if key not in settings]
    if not defaulted:
        return None
    return ("%s lacks %s, so the default%s %s used: add the value%s the weights were trained "
            "with" % (side, ", ".join(defaulted), "" if len(defaulted) == 1 else "s",
                      ", ".join("%s=%r" % (k, DEFAULTS[k]) for k in defaulted)
                      + (" was" if len(defaulted) == 1 else " were"),
                      "" if len(defaulted) == 1 else "s"))


# ------------------------------------------------------------------------------ artifacts
def artifact_prefix(path):
    """``(PREFIX, kind)`` when ``path`` names an export or INT8 model (``PREFIX``,
    ``PREFIX-0000.params`` or ``PREFIX-symbol.json``), else None."""
    path = str(path)
    for suffix in ("-0000.params", "-symbol.json"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    if not os.path.isfile(path + "-symbol.json"):
        if os.path.isfile(path + "-0000.params"):
            raise FileNotFoundError("%s-symbol.json is missing: the export %s needs its graph "
                                    "beside %s-0000.params (copy it too, or export again)"
                                    % (path, path, path))
        return None
    if not os.path.isfile(path + ".json"):
        raise FileNotFoundError("%s-symbol.json has no sidecar %s.json with its model settings "
                                "(duc-hdc export and quantize write it)" % (path, path))
    kind = read_sidecar(path + ".json").get("kind")
    if kind not in _PREFIX_KINDS:
        raise ValueError("%s.json: kind %r; an export says %r, a bf16 export %r, an INT8 model "
                         "%r" % (path, kind, EXPORT_KIND, BF16_EXPORT_KIND, QUANTIZED_KIND))
    return path, kind


_PREFIX_KINDS = (EXPORT_KIND, BF16_EXPORT_KIND, QUANTIZED_KIND)


def _from_prefix(prefix, kind, ctx, head_padding):
    if kind == BF16_EXPORT_KIND:  # a compiled bf16 graph: runs as it is (MKLDNN fusion)
        doc = read_sidecar(prefix + ".json")
        _sidecar_settings(doc, prefix + ".json", compiled=True)
        if runtime.bf16_support() is None:  # oneDNN would fail with "could not create a
            # primitive descriptor iterator" at the first call
            raise ValueError("%s is a bf16 export and %s; export the network again with "
                             "--precision fp32 (or int8) for this CPU" % (
                                 prefix, runtime.no_bf16_reason()))
        return InferenceNet(doc["model"], BF16_KIND, load_graph_files(prefix, ctx),
                            backend="MKLDNN")
    if kind == QUANTIZED_KIND:
        for suffix in ("-0000.params",):
            if not os.path.isfile(prefix + suffix):
                raise FileNotFoundError("INT8 model %s: %s%s is missing" % (prefix, prefix,
                                                                           suffix))
        _sidecar_settings(read_sidecar(prefix + ".json"), prefix + ".json", compiled=True)
        return load_quantized(prefix, ctx)
    doc = read_sidecar(prefix + ".json")
    settings = _sidecar_settings(doc, prefix + ".json")
    graph_symbol(prefix + "-symbol.json")  # the weights load into a rebuilt network, but the
    # graph is what other consumers (SymbolBlock, Module, ONNX) read: a damaged one is named
    net = _build(settings, prefix + ".json", ctx, head_padding)
    return load_params_checked(net, prefix + "-0000.params", ctx, graph_names=True,
                               note=_defaults_note(settings, prefix + ".json"))


def _build(settings, source, ctx, head_padding):
    try:
        return build_model(settings, ctx=ctx, initialize=False, head_padding=head_padding)
    except (TypeError, ValueError) as e:
        raise SidecarError("%s: model settings do not build a network: %s" % (source, e)) from e


def _from_params_file(path, ctx, head_padding):
    if not os.path.isfile(path):
        raise FileNotFoundError("parameters %s not found" % path)
    side = sidecar_path(path)
    doc = read_sidecar(side, what=path)
    if doc.get("kind") in _PREFIX_KINDS:
        return _from_prefix(side[:-len(".json")], doc["kind"], ctx, head_padding)
    settings = _sidecar_settings(doc, side)
    net = _build(settings, side, ctx, head_padding)
    return load_params_checked(net, path, ctx, note=_defaults_note(settings, side))


def _refuse_other_files(path):
    """ValueError for a file that is none of the models :func:`load` takes but that users pass
    as one (the settings file beside the weights, an ONNX file, a recipe), saying what to pass
    instead; None for anything else (a weights file under any name is tried)."""
    base, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext == ".json":
        if os.path.isfile(base + ".params"):
            raise ValueError("%s is the settings file of %s (the weights): pass --model %s"
                             % (path, base + ".params", base + ".params"))
        if os.path.isfile(base + "-symbol.json"):
            raise ValueError("%s is the settings file of the export %s: pass --model %s"
                             % (path, base, base))
        raise ValueError("%s is a JSON file, not a model: --model takes FILE.params (its "
                         "FILE.json beside it), an export PREFIX, a model or a zoo name" % path)
    if ext == ".onnx":
        if os.path.isfile(base + "-symbol.json"):
            raise ValueError("%s is the ONNX file of the export %s, for ONNX Runtime or "
                             "OpenVINO; duc-hdc runs the export's MXNet files: pass --model %s"
                             % (path, base, base))
        raise ValueError("%s is an ONNX file: duc-hdc does not run ONNX graphs (run it in ONNX "
                         "Runtime); the ONNX zoo's ResNet-101-DUC converts to duc-hdc weights "
                         "with: duc-hdc convert onnx --onnx %s --classes 19 --out DIR/" % (path, path))
    if ext in (".yaml", ".yml"):
        raise ValueError("%s is a recipe, not weights: pass --config %s --params FILE.params"
                         % (path, path))


def _own_settings(net, overrides, source):
    """``net`` (loaded from the artifact ``source``), or ValueError where a model setting given
    with it (``--classes``, ``--base-width``, ...: they build a model name) differs from the
    artifact's own: they were ignored before, without a word."""
    config = dict(DEFAULTS, **(getattr(net, "config", None) or {}))  # a sidecar may omit some
    wrong = ["--%s %s (it has %s)" % (key.replace("_", "-"), value, config.get(key))
             for key, value in sorted(overrides.items()) if config.get(key) != value]
    if wrong:
        raise ValueError("%s is a trained model with its own settings: %s; drop %s (they set up "
                         "a model name)" % (source, ", ".join(wrong),
                                            "that option" if len(wrong) == 1 else "those options"))
    return net


def _from_zoo(name, root, base_url, ctx, head_padding, overrides, progress=True):
    if name in zoo.MODELS:
        entry = zoo.get_entry(name)
        if entry.model is None:
            raise ValueError("%r is an ImageNet backbone (for training), not a segmentation "
                             "model; choose one of: %s" % (name, ", ".join(
                                 n for n in zoo.list_models() if zoo.MODELS[n].model)))
        path = zoo.get_weights(name, root=root, base_url=base_url, progress=progress)
    else:
        entry, path = zoo.weights_for_model(name, root=root, base_url=base_url,
                                            progress=progress)
    note = None
    expected = get_model_settings(entry.model, classes=entry.classes, cell_width=entry.cell_width)
    if os.path.exists(sidecar_path(path)):
        settings = dict(_sidecar_settings(read_sidecar(sidecar_path(path), what=path),
                                          sidecar_path(path)))
        note = _defaults_note(settings, sidecar_path(path))
        differ = [key for key in ("depth", "classes", "cell_width")
                  if settings.get(key) != expected.get(key)]
        if differ:  # a file put in the cache by hand under the entry's name
            raise ValueError("%s: the zoo entry %s is %s, but %s says %s; put the entry's own "
                             "weights there (duc-hdc download %s explains how) or load that "
                             "file by its path" % (
                                 path, entry.name, ", ".join("%s=%r" % (k, expected.get(k))
                                                             for k in differ),
                                 sidecar_path(path), ", ".join("%s=%r" % (k, settings.get(k))
                                                               for k in differ), entry.name))
    else:
        settings = expected
    for key, value in (overrides or {}).items():
        if value is not None and settings.get(key) != value:
            raise ValueError("%s: the pretrained weights have %s=%r; %s=%r does not fit them"
                             % (name, key, settings.get(key), key, value))
    net = _build(settings, sidecar_path(path), ctx, head_padding)
    return load_params_checked(net, path, ctx, note=note)


def load(model=None, params=None, config=None, ctx=None, classes=None, overrides=None,
         root=None, base_url=None, head_padding=True, progress=True):
    """Load any model a user can have (see the module docstring).

    Parameters
    ----------
    model : str, optional
        Zoo name, model name, ``FILE.params`` or an export / INT8 ``PREFIX``.
    params : str, optional
        Weights: for ``model`` (a model name) or ``config`` (a recipe); alone, an artifact.
    config : str, optional
        Recipe name or YAML: the network's settings come from its ``model`` section.
    ctx : mx.Context, optional
    classes : int, optional
        Classes of a generic model name (with ``params``).
    overrides : dict, optional
        Further model settings for a model name with ``params``.
    root, base_url : str, optional
        Weight cache and mirror for zoo names (:func:`duc_hdc.hub.zoo.get_weights`).
    head_padding : bool
        See :class:`~duc_hdc.models.network.DUCHDC`.
    progress : bool
        A progress bar while zoo weights download.
    """
    ctx = ctx or mx.cpu()
    overrides = dict(overrides or {})
    if classes is not None:
        overrides["classes"] = classes
    if config is not None:
        if model is not None:
            raise ValueError("give --config C or --model NAME, not both")
        if not params:
            raise ValueError("--config %s: give the trained weights with --params FILE (a recipe "
                             "alone has no trained weights)" % config)
        cfg = load_config(config)
        settings = get_model_settings(cfg["model"]["name"],
                                      **dict(model_overrides(cfg), **overrides))
        net = _build(settings, config, ctx, head_padding)
        return load_params_checked(net, params, ctx)
    if model is None:
        if params is None:
            raise ValueError("no model given: pass --model NAME_OR_ARTIFACT, --params FILE "
                             "(with its .json sidecar) or --config C --params FILE")
        model, params = params, None
    model = str(model)
    if params is not None:
        if model not in MODEL_SPECS:
            raise ValueError("--params %s: --model must then be a model name (%s), got %r"
                             % (params, ", ".join(model_names()), model))
        net = _build(get_model_settings(model, **overrides), model, ctx, head_padding)
        return load_params_checked(net, params, ctx)
    prefix = artifact_prefix(model)
    if prefix is not None:
        return _own_settings(_from_prefix(prefix[0], prefix[1], ctx, head_padding), overrides,
                             model)
    if os.path.isfile(model) or model.endswith(".params"):
        _refuse_other_files(model)
        return _own_settings(_from_params_file(model, ctx, head_padding), overrides, model)
    if model in zoo.MODELS or model in MODEL_SPECS:
        return _from_zoo(model, root, base_url, ctx, head_padding, overrides, progress)
    raise ValueError("%r is not a file, an export prefix, a model name (%s) or a zoo name (%s)"
                     % (model, ", ".join(model_names()), ", ".join(zoo.list_models())))
