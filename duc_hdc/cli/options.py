"""Option helpers shared by every command: one spelling of each option across the CLI.

- model: ``--model NAME_OR_ARTIFACT``, ``--params FILE``, ``--config C``, ``--classes N``
  (all through :func:`duc_hdc.load`);
- devices: ``--gpus LIST`` / ``--cpu``, ``--fp16``, ``--cudnn-autotune``;
- ``--no-progress``;
- ``--out``: a folder, except where the command's help documents a prefix.
"""
import argparse

from ..config import available_configs
from ..devices import contexts, gpu_options


def _items(text, what=None, sep=","):
    """The items of a comma-separated list; an empty one (``1,,2``, ``1,``) is refused, not
    dropped: it is a value left out."""
    items = [v.strip() for v in text.split(sep)]
    if not all(items):
        raise argparse.ArgumentTypeError("%san empty item in %r (write e.g. 1,2)"
                                         % (what + ": " if what else "", text))
    return items


def ints(text, what, count=None):
    items = _items(text.replace("x", ","), what)
    try:
        values = [int(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError("%s: expected comma-separated integers, got %r"
                                         % (what, text))
    if count is not None and len(values) != count:
        raise argparse.ArgumentTypeError("%s: expected %d integers, got %r" % (what, count, text))
    return values


def shape(text):
    """``N,3,H,W`` with N >= 1 and H, W positive multiples of 8 (one rule:
    :func:`duc_hdc.inference.export.parse_shape`)."""
    from ..inference.export import parse_shape

    try:
        return parse_shape(text)
    except ValueError as e:  # argparse names the option itself ("argument --shape: ...")
        message = str(e)
        raise argparse.ArgumentTypeError(message[len("--shape: "):]
                                         if message.startswith("--shape: ") else message)


def rates(text):
    return ints(text, "RATES")


def positive_floats(text):
    items = _items(text)
    try:
        values = [float(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, got %r" % text)
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("expected positive numbers, got %r" % text)
    return values


#: the image scales ``--scales`` accepts: factors of the image size (the release's multi-scale
#: test used 0.5 to 1.75); outside this range a mistake (75 for 0.75) would resize a 1024x2048
#: image to tens of thousands of pixels a side and exhaust memory
SCALE_RANGE = (0.05, 4.0)


def scales(text):
    """``--scales``: comma-separated finite factors within :data:`SCALE_RANGE`."""
    values = positive_floats(text)
    low, high = SCALE_RANGE
    bad = [v for v in values if not (low <= v <= high)]  # nan and inf fail both
    if bad:
        raise argparse.ArgumentTypeError(
            "%r: scales are factors of the image size between %g and %g, such as "
            "0.75,1.0,1.25 (not percent), got %g" % (text, low, high, bad[0]))
    return values


def int_in(low, high):
    """An argparse type: an integer within ``low..high`` (argparse's ``choices`` would list
    every allowed value in its message)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError("expected an integer from %d to %d, got %r"
                                             % (low, high, text))
        return value
    return parse


def size(text):
    values = ints(text, "SIZE")
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError("expected H,W or a single positive integer, got %r"
                                         % text)
    return tuple(values)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got %r" % text)
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("expected an integer >= 0, got %r" % text)
    return value


def _number(text, low, strict):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > low if strict else value >= low):  # also refuses nan
        raise argparse.ArgumentTypeError("expected a number %s %g, got %r"
                                         % (">" if strict else ">=", low, text))
    return value


def positive_float(text):
    return _number(text, 0, True)


def non_negative_float(text):
    return _number(text, 0, False)


def needs(option, given, other, what):
    """Refuse ``option`` (a value the user gave: not None) without ``other`` (its value None),
    in one line: ``what`` says what ``option`` does."""
    if given is not None and other is None:
        raise ValueError("%s %s; give it too, or drop %s" % (option, what, option))


def add_model(s, config=True, classes=True):
    """--model / --params / --config / --classes: what :func:`duc_hdc.load` takes."""
    g = s.add_argument_group("model (one loader for every artifact)")
    g.add_argument("--model", metavar="NAME_OR_ARTIFACT",
                   help="zoo or model name (`duc-hdc models`), FILE.params with its FILE.json, "
                        "or an export / INT8 PREFIX")
    g.add_argument("--params", metavar="FILE",
                   help="weights: for --model NAME or --config C; alone, FILE.params + sidecar")
    if config:
        g.add_argument("--config", metavar="RECIPE",
                       help="recipe name (%s) or YAML: the model settings (with --params)"
                            % ", ".join(available_configs()))
    if classes:
        g.add_argument("--classes", type=positive_int, help="classes of a generic model name")
        g.add_argument("--base-width", type=positive_int,
                       help="channels of a generic model name's first stage (narrower networks "
                            "for tests and quick looks)")


def model_overrides(args):
    """The model settings the model options give beyond ``--classes``: ``{'base_width': N}``
    or ``{}`` (checked against an artifact's own, which they must match)."""
    width = getattr(args, "base_width", None)
    return {} if width is None else {"base_width": width}


def add_devices(s, multi=False):
    """--gpus LIST / --cpu, and the GPU-only --fp16 / --cudnn-autotune."""
    g = s.add_argument_group("devices (GPU paths untested here: no GPU)")
    dev = g.add_mutually_exclusive_group()
    dev.add_argument("--gpus", metavar="LIST",
                     help="GPU ids, e.g. 0 or 0,1,2,3%s" % ("" if multi else
                                                           " (the first one is used)"))
    dev.add_argument("--cpu", action="store_true", help="run on the CPU (the default)")
    g.add_argument("--fp16", action="store_true", help="GPU: float16 with MXNet AMP")
    g.add_argument("--cudnn-autotune", type=int, choices=(0, 1, 2),
                   help="GPU: MXNET_CUDNN_AUTOTUNE_DEFAULT (0 off, 1 limited workspace, "
                        "2 fastest)")


def add_progress(s):
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def devices(args, cpu_devices=1):
    """The contexts the device options name (refused with one line where impossible)."""
    return contexts(None if args.cpu else args.gpus, cpu_devices=cpu_devices, fp16=args.fp16,
                    cudnn_autotune=args.cudnn_autotune)


def cpu_only(args, what):
    """Refuse the GPU options (after :func:`devices` refused them where there is no GPU): the
    command runs ``what`` on the CPU."""
    devices(args)
    given = gpu_options(args.gpus, args.fp16, args.cudnn_autotune)
    if given:
        raise ValueError("%s: %s runs on the CPU; drop %s"
                         % (" and ".join(given), what, " and ".join(given)))


def progress(args):
    return not getattr(args, "no_progress", False)


PRECISIONS = ("fp32", "bf16", "int8")
#: calibration images of --precision int8 / quantize unless --num-calib says otherwise
NUM_CALIB = 4


def add_precision(s, calibration=True):
    """--precision fp32|bf16|int8 (and, for int8 on a network, --calib-rec / --num-calib)."""
    g = s.add_argument_group("precision")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default: BatchNorm folded, MKLDNN-fused), bf16 (AMX or "
                        "AVX512_BF16 CPUs), int8 (an INT8 model, or %s)"
                        % ("quantized with --calib-rec" if calibration else
                           "quantized on random images: for timing only"))
    if calibration:
        g.add_argument("--calib-rec", metavar="REC",
                       help="--precision int8 on a network: .rec whose images calibrate it")
        g.add_argument("--num-calib", type=positive_int,
                       help="calibration images, spread over --calib-rec (default %d)"
                            % NUM_CALIB)


def check_calibration(args):
    """Refuse --num-calib without --calib-rec, and --calib-rec without --precision int8 (the
    command's first step: before any model is loaded)."""
    needs("--num-calib", getattr(args, "num_calib", None), getattr(args, "calib_rec", None),
          "counts the images of --calib-rec")
    if getattr(args, "calib_rec", None) and getattr(args, "precision", None) != "int8":
        raise ValueError("--calib-rec calibrates --precision int8; give --precision int8")


def calibration(args, net):
    """The normalized calibration batch --precision int8 needs for a network, else None
    (:func:`check_calibration` is the command's first step)."""
    if getattr(args, "precision", None) != "int8" or not getattr(args, "calib_rec", None):
        return None
    if getattr(net, "kind", None) == "int8":  # a compiled INT8 model: calibrated already
        raise ValueError("--calib-rec %s: the model is an INT8 model, calibrated when it was "
                         "quantized; drop --calib-rec" % args.calib_rec)
    from ..inference.graphs import calibration_images

    return calibration_images(args.calib_rec, args.num_calib or NUM_CALIB, net.normalization)
