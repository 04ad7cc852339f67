"""Training recipes: YAML load, ``--set a.b=v`` overrides, validation with clear errors.

A recipe is one complete YAML file (no inheritance): ``model``, ``data``, ``train`` sections.

Every key is declared in :data:`SCHEMA` with its type (and choices where they are closed), so an
unknown key or a wrong type stops with a message naming the key and what would be right.
"""
import copy
import json
import os
import re

import yaml

from .fileio import atomic_write

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))
_LIST = (list, tuple)
_OPT_LIST = (list, tuple, type(None))

#: train.kvstore's values (the dist_* ones need `duc-hdc launch`)
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")

#: section -> key -> (accepted types, choices or None)
SCHEMA = {
    "name": (str, None),
    "model": {
        "name": (str, None),                 # a duc_hdc.get_model name
        "classes": (_OPT_INT, None),
        "cell_width": (_OPT_INT, (None, 1, 2, 4, 8)),
        "dilations": ((str, list, tuple, type(None)), None),
        "aspp_rates": (_OPT_LIST, None),
        "variant": (_OPT_STR, (None, "tusimple", "v1s")),
        "head": (_OPT_STR, (None, "duc", "bilinear")),
        "base_width": (_OPT_INT, None),
        "bn_frozen": ((bool, type(None)), None),
        "bn_eps": (_OPT_NUM, None),
        "mean": (_OPT_LIST, None),
        "std": (_OPT_LIST, None),
        # initialization
        "init_params": (_OPT_STR, None),      # whole-network params (e.g. a converted release)
        "backbone_pretrained": (_OPT_STR, None),  # GluonCV store name, e.g. resnet101_v1s
        "backbone_params": (_OPT_STR, None),  # offline copy of those ImageNet weights
    },
    "data": {
        "dataset": (str, ("cityscapes", "voc", "kitti_road")),
        "train_rec": (str, None),
        "val_rec": (_OPT_STR, None),
        "crop_size": (_LIST, None),
        "scales": (_LIST, None),
        "anchor_jitter": (_OPT_INT, None),
        "mirror": (bool, None),
        "num_workers": (int, None),
        "ignore_label": (int, None),
        "val_limit": (_OPT_INT, None),        # evaluate the first N val images only
    },
    "train": {
        "epochs": (int, None),
        "batch_size_per_device": (int, None),
        "optimizer": (str, ("sgd", "nag", "adam")),
        "lr": (_NUM, None),
        "momentum": (_NUM, None),
        "wd": (_NUM, None),
        "lr_schedule": (str, ("step", "poly", "constant")),
        "lr_step_epochs": (int, None),
        "lr_factor": (_NUM, None),
        "lr_power": (_NUM, None),
        "warmup_iters": (int, None),
        "clip_gradient": (_OPT_NUM, None),
        "seed": (int, None),
        "kvstore": (str, KVSTORES),
        "amp": ((bool, str), (False, True, "bfloat16", "float16")),  # true: the devices' own
        "checkpoint_every_iters": (int, None),
        "keep_last": (int, None),
        "val_every_epochs": (int, None),
        "log_every_iters": (int, None),
        "out_dir": (str, None),
        "max_iters": (_OPT_INT, None),        # stop early (smoke runs, tests)
    },
}


#: key -> (lower bound, inclusive?, upper bound, inclusive?) for every numeric key; None =
#: unbounded on that side. A null value is accepted where the key's type allows null.
RANGES = {
    "model.classes": (1, True, None, None),
    "model.base_width": (1, True, None, None),
    "model.bn_eps": (0, False, None, None),
    "data.anchor_jitter": (0, True, None, None),
    "data.num_workers": (0, True, None, None),
    "data.ignore_label": (0, True, 255, True),
    "data.val_limit": (1, True, None, None),
    "train.epochs": (1, True, None, None),
    "train.batch_size_per_device": (1, True, None, None),
    "train.lr": (0, False, None, None),
    "train.momentum": (0, True, 1, False),
    "train.wd": (0, True, None, None),
    "train.lr_step_epochs": (1, True, None, None),
    "train.lr_factor": (0, False, 1, True),
    "train.lr_power": (0, False, None, None),
    "train.warmup_iters": (0, True, None, None),
    "train.clip_gradient": (0, True, None, None),
    "train.seed": (0, True, 2 ** 32 - 1, True),
    "train.checkpoint_every_iters": (1, True, None, None),
    "train.keep_last": (1, True, None, None),
    "train.val_every_epochs": (1, True, None, None),
    "train.log_every_iters": (1, True, None, None),
    "train.max_iters": (1, True, None, None),
}

#: keys a resumed run may change: they extend the run or only change what it reports; the
#: batches, the schedule up to the old end and every update stay those of the saved run.
#: ``data.num_workers`` is here because batches are a function of (seed, epoch, index)
#: whatever the number of loader processes. ``train.out_dir`` is the resumed directory.
RESUME_KEYS = ("train.epochs", "train.max_iters", "train.log_every_iters",
               "train.val_every_epochs", "data.num_workers")


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the key."""


def _range_text(low, low_inc, high, high_inc):
    parts = []
    if low is not None:
        parts.append("%s %s" % (">=" if low_inc else ">", low))
    if high is not None:
        parts.append("%s %s" % ("<=" if high_inc else "<", high))
    return " and ".join(parts)


def _check_range(source, key, value):
    if key not in RANGES or value is None:
        return
    low, low_inc, high, high_inc = RANGES[key]
    bad = (low is not None and (value < low if low_inc else value <= low)) or \
        (high is not None and (value > high if high_inc else value >= high))
    if bad or (isinstance(value, float) and value != value):
        raise ConfigError("%s: %s = %r is out of range: must be %s%s"
                          % (source, key, value, _range_text(low, low_inc, high, high_inc),
                             " (or null)" if key in ("train.max_iters", "train.clip_gradient",
                                                     "data.val_limit", "data.anchor_jitter")
                             else ""))


def available_configs():
    """Names of the packaged recipes."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def config_path(name_or_path):
    """A packaged recipe name or a YAML path -> the file path."""
    if os.path.isdir(name_or_path):
        raise ConfigError("%s is a directory; --config takes a recipe name (%s) or a YAML file"
                          % (name_or_path, ", ".join(available_configs())))
    if os.path.exists(name_or_path):
        return name_or_path
    packaged = os.path.join(CONFIG_DIR, name_or_path + ".yaml")
    if os.path.exists(packaged):
        return packaged
    raise ConfigError("config %r is neither a YAML file nor a packaged recipe; recipes: %s"
                      % (name_or_path, ", ".join(available_configs())))


def _type_names(types):
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _check_value(key, value, types, choices, source="<config>"):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError("%s: %s: expected %s, got %r" % (source, key, _type_names(types), value))
    if not isinstance(value, types):
        how = (" (write a list as 64,128 or [64,128])" if list in
               (types if isinstance(types, tuple) else (types,)) else "")
        if choices is not None:  # what would be right, not only its type
            how = "; one of %s" % ", ".join(
                "null" if c is None else "true" if c is True else "false" if c is False
                else str(c) for c in choices)
        raise ConfigError("%s: %s: expected %s, got %r (%s)%s"
                          % (source, key, _type_names(types), value, type(value).__name__, how))
    if choices is not None and value not in choices:
        raise ConfigError("%s: %s: %r is not one of %s"
                          % (source, key, value,
                             ", ".join(repr(c) for c in choices if c is not None)))


def _check_dilations(model, source):
    """model.dilations resolved for the recipe's backbone, as the network will (its error,
    which named no key, gets the key and where the value came from)."""
    from .models.network import MODEL_SPECS
    from .models.resnet_hdc import RESNET_SPECS, dilation_schedule

    value = model["dilations"]
    if value is None:
        return
    try:
        dilation_schedule(value, RESNET_SPECS[MODEL_SPECS[model["name"]]["depth"]][1])
    except (ValueError, TypeError) as e:
        raise ConfigError("%s: model.dilations = %r: %s" % (source, value, e)) from None


def validate(cfg, source="<config>", origins=None):
    """Check every key against :data:`SCHEMA`; all keys are required (recipes are complete).

    ``origins`` maps ``section.key`` to where its value came from (``--set a.b=v``, filled by
    :func:`apply_overrides`); the other keys' errors name ``source``.
    """
    origins = origins or {}
    where = lambda key: origins.get(key, source)  # noqa: E731
    if not isinstance(cfg, dict):
        raise ConfigError("%s: a recipe is a mapping with sections %s"
                          % (source, ", ".join(sorted(SCHEMA))))
    unknown = sorted(set(cfg) - set(SCHEMA))
    if unknown:
        raise ConfigError("%s: unknown section %r; valid: %s"
                          % (source, unknown[0], ", ".join(sorted(SCHEMA))))
    for section, spec in SCHEMA.items():
        if section not in cfg:
            raise ConfigError("%s: missing %r" % (source, section))
        if not isinstance(spec, dict):
            _check_value(section, cfg[section], *spec, source=where(section))
            continue
        values = cfg[section]
        if not isinstance(values, dict):
            raise ConfigError("%s: %r must be a mapping" % (source, section))
        unknown = sorted(set(values) - set(spec))
        if unknown:
            raise ConfigError("%s: unknown key %s.%s; valid keys: %s"
                              % (source, section, unknown[0], ", ".join(sorted(spec))))
        missing = sorted(set(spec) - set(values))
        if missing:
            raise ConfigError("%s: missing key %s.%s (recipes are complete: every key is given)"
                              % (source, section, missing[0]))
        for key, (types, choices) in spec.items():
            name = "%s.%s" % (section, key)
            _check_value(name, values[key], types, choices, where(name))
            _check_range(where(name), name, values[key])
            if name in PATH_KEYS + ("train.out_dir",) and isinstance(values[key], str) \
                    and not values[key].strip():
                raise ConfigError("%s: %s is empty; give a path (or null where none is needed)"
                                  % (where(name), name))
    data = cfg["data"]
    if len(data["crop_size"]) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0
                                          or v % 8 for v in data["crop_size"]):
        raise ConfigError("%s: data.crop_size = %r: must be two positive multiples of 8 (height, "
                          "width)" % (where("data.crop_size"), data["crop_size"]))
    if not data["scales"] or any(not isinstance(s, _NUM) or isinstance(s, bool) or not s > 0
                                 for s in data["scales"]):
        raise ConfigError("%s: data.scales = %r: must be a non-empty list of numbers > 0"
                          % (where("data.scales"), data["scales"]))
    for key in ("mean", "std"):
        value = cfg["model"][key]
        if value is not None and (len(value) != 3 or any(
                not isinstance(v, _NUM) or isinstance(v, bool) for v in value)
                or (key == "std" and any(not v > 0 for v in value))):
            raise ConfigError("%s: model.%s = %r: must be null or 3 numbers (R, G, B)%s"
                              % (where("model." + key), key, value,
                                 ", each > 0" if key == "std" else ""))
    rates = cfg["model"]["aspp_rates"]
    if rates is not None and (not rates or any(not isinstance(r, int) or isinstance(r, bool)
                                               or r < 1 for r in rates)):
        raise ConfigError("%s: model.aspp_rates = %r: must be null or a non-empty list of "
                          "integers >= 1" % (where("model.aspp_rates"), rates))
    from .models.network import MODEL_SPECS

    if cfg["model"]["name"] not in MODEL_SPECS:
        raise ConfigError("%s: model.name: %r is not a model; choose one of %s"
                          % (where("model.name"), cfg["model"]["name"],
                             ", ".join(sorted(MODEL_SPECS))))
    _check_dilations(cfg["model"], where("model.dilations"))
    return cfg


def parse_override(text):
    """``a.b=v`` -> (['a', 'b'], v) with v parsed as YAML (numbers, lists, null, true...)."""
    if "=" not in text:
        raise ConfigError("--set %r: expected key=value, e.g. train.lr=0.01" % text)
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError("--set %s: cannot parse value %r: %s" % (key, raw, problem)) from e
    # no key takes a mapping, and a value holds no comment: YAML would have cut a path such
    # as "/data/run #2/x.rec" at " #", or read "/data/a: b/x.rec" as a mapping
    if isinstance(value, dict) or (re.search(r"(^|\s)#", raw) and
                                   not (isinstance(value, str) and "#" in value)):
        value = raw.strip()
    return key.strip().split("."), value


def _list_value(value, types):
    """``64,128`` (YAML reads a string) for a list-valued key -> [64, 128]."""
    types = types if isinstance(types, tuple) else (types,)
    if list in types and isinstance(value, str) and "," in value and \
            not value.strip().startswith(("[", "{")):
        try:
            items = yaml.safe_load("[%s]" % value)
        except yaml.YAMLError:
            return value
        return [_yaml_number(v) for v in items] if isinstance(items, list) else value
    return value


def apply_overrides(cfg, overrides, origins=None):
    """Apply ``a.b=v`` strings to a copy of ``cfg``; unknown keys are errors.

    A list-valued key also takes ``v1,v2`` (``data.crop_size=64,128``). ``origins``, if given,
    gets ``{'a.b': '--set a.b=v'}`` for every key set, so that :func:`validate` blames the
    option rather than the recipe file.
    """
    cfg = copy.deepcopy(cfg)
    for text in overrides or ():
        path, value = parse_override(text)
        node, spec = cfg, SCHEMA
        for i, part in enumerate(path):
            if not isinstance(spec, dict) or part not in spec:
                where = ".".join(path[:i]) or "top level"
                valid = sorted(spec) if isinstance(spec, dict) else []
                raise ConfigError("--set %s: unknown key %r at %s; valid: %s"
                                  % (text, part, where, ", ".join(valid)))
            if i == len(path) - 1:
                if isinstance(spec[part], dict):
                    raise ConfigError("--set %s: %r is a section; set one of its keys: %s"
                                      % (text, part, ", ".join(sorted(spec[part]))))
                node[part] = _list_value(_yaml_number(value), spec[part][0])
                if origins is not None:
                    origins[".".join(path)] = "--set %s" % text.strip()
            else:
                node, spec = node.setdefault(part, {}), spec[part]
    return cfg


def load_config(name_or_path, overrides=None):
    """Load a recipe (packaged name or YAML path), apply overrides, validate, return a dict."""
    path = config_path(name_or_path)
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:  # PyYAML's text spans lines: the problem and where, on one
        mark = getattr(e, "problem_mark", None)
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ConfigError("%s: not valid YAML%s: %s" % (
            path, where, getattr(e, "problem", None) or " ".join(str(e).split()))) from None
    except UnicodeDecodeError:
        raise ConfigError("%s is not a YAML recipe (it is not text); pass a recipe name (%s) or "
                          "a .yaml file" % (path, ", ".join(available_configs()))) from None
    if not isinstance(cfg, dict):
        raise ConfigError("%s: the top level of a recipe must be a mapping with sections %s, "
                          "got %s" % (path, ", ".join(sorted(SCHEMA)),
                                      "an empty file" if cfg is None else
                                      "a %s" % type(cfg).__name__))
    _fix_numbers(cfg)
    origins = {}
    cfg = apply_overrides(cfg, overrides, origins)
    return validate(cfg, source=path, origins=origins)


_EXP_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml_number(value):
    """PyYAML (YAML 1.1) reads ``1e-4`` (no dot) as a string; read it as the number it is."""
    return float(value) if isinstance(value, str) and _EXP_NUMBER.match(value) else value


def _fix_numbers(node):
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _yaml_number(value)
            _fix_numbers(value)


def model_overrides(cfg):
    """The ``get_model`` keyword overrides in ``cfg['model']`` (None = the recipe's default)."""
    skip = {"name", "init_params", "backbone_pretrained", "backbone_params"}
    return {k: (tuple(v) if isinstance(v, list) and k != "dilations" else v)
            for k, v in cfg["model"].items() if k not in skip and v is not None}


def save_config(cfg, path):
    """Write the resolved config as YAML (atomically)."""
    with atomic_write(path) as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def _flat(cfg):
    out = {}
    for section, spec in SCHEMA.items():
        if isinstance(spec, dict):
            for key in spec:
                out["%s.%s" % (section, key)] = cfg.get(section, {}).get(key)
        else:
            out[section] = cfg.get(section)
    return out


#: recipe keys that name files: a new run saves them absolute (:func:`absolute_paths`), so that
#: it resumes from any folder
PATH_KEYS = ("data.train_rec", "data.val_rec", "model.init_params", "model.backbone_params")


def absolute_paths(cfg):
    """A copy of ``cfg`` with the files of :data:`PATH_KEYS` as absolute paths (relative to
    the current folder, ``~`` expanded)."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = (out.get(section) or {}).get(name)
        if isinstance(value, str) and value:
            out[section][name] = os.path.abspath(os.path.expanduser(value))
    return out


def resume_config(saved, cfg=None, overrides=None, init_params_hint=None):
    """The config a resumed run continues under, and the keys changed from the saved one.

    The saved config is authoritative. A key of :data:`RESUME_KEYS` may differ (it is applied,
    and reported); any other key that differs is refused, naming it, its saved and its new
    value. ``cfg`` is a complete recipe (every key compared with the saved one) and/or
    ``overrides`` the user's ``a.b=v`` strings (applied to the saved config); ``train.out_dir``
    is never compared (the resumed directory is the run's directory).

    Returns
    -------
    (dict, list of (key, old, new))
    """
    merged = copy.deepcopy(saved)
    if cfg is not None:
        validate(copy.deepcopy(cfg), source="the recipe given with --resume")
        if _flat(saved).get("data.train_rec", "").startswith(os.sep):  # saved absolute: the
            cfg = absolute_paths(cfg)  # recipe's relative paths are relative to this folder
        new = _flat(cfg)
        old = _flat(saved)
        for key in RESUME_KEYS:
            section, name = key.split(".")
            merged[section][name] = cfg[section][name]
        diff = [k for k in new if k != "train.out_dir" and k not in RESUME_KEYS
                and _norm(new[k]) != _norm(old[k])]
        if diff:
            _refuse_resume(diff[0], old[diff[0]], new[diff[0]], init_params_hint)
    if overrides:
        for text in overrides:
            path, value = parse_override(text)
            key = ".".join(path)
            before = _flat(merged).get(key)
            merged = apply_overrides(merged, [text])
            if key in PATH_KEYS and isinstance(before, str) and before.startswith(os.sep):
                merged = absolute_paths(merged)  # as the run saved it
            after = _flat(merged).get(key)
            if key != "train.out_dir" and key not in RESUME_KEYS and _norm(after) != _norm(before):
                _refuse_resume(key, before, after, init_params_hint)
    merged["train"]["out_dir"] = saved["train"]["out_dir"]
    validate(merged, source="the resumed config")
    old = _flat(saved)
    changed = [(k, old[k], v) for k, v in _flat(merged).items() if _norm(v) != _norm(old[k])]
    return merged, changed


def config_differences(first, second, skip=()):
    """``[(key, first's value, second's value)]`` for every ``section.key`` of the schema
    whose values differ (tuples and lists alike), but the keys in ``skip``."""
    a, b = (json.loads(json.dumps(_flat(c), default=list)) for c in (first, second))
    return [(k, a[k], b.get(k)) for k in a if k not in skip and a[k] != b.get(k)]


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def _refuse_resume(key, old, new, init_params_hint):
    hint = init_params_hint or "DIR/checkpoints/ckpt-N.params"
    raise ConfigError(
        "--resume: %s is %r in the run being resumed, %r now. A resumed run continues exactly "
        "under its saved config; only %s may change. To train from these weights with the new "
        "value, start a new run: --set %s=%r --set model.init_params=%s --set "
        "train.out_dir=NEW_DIR (without --resume)" % (key, old, new, ", ".join(RESUME_KEYS),
                                                       key, new, hint))
