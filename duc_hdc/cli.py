"""The ``duc-hdc`` command: argument parsing only; the work lives in the library modules."""
import argparse
import json
import logging
import sys

import duc_hdc  # noqa: F401  (sets OMP_NUM_THREADS before anything imports mxnet)

log = logging.getLogger("duc_hdc")


def _ints(text, what, count=None):
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("%s: expected comma-separated integers, got %r"
                                         % (what, text))
    if count is not None and len(values) != count:
        raise argparse.ArgumentTypeError("%s: expected %d integers, got %r" % (what, count, text))
    return values


def _shape(text):
    return tuple(_ints(text, "--shape", 4))


def _rates(text):
    return _ints(text, "RATES")


def _model_from_args(args):
    """The network named by --model (with --classes / --params) or rebuilt from --params."""
    from .model.network import get_model, load_model

    if args.model:
        overrides = {"classes": getattr(args, "classes", None)}
        net = get_model(args.model, **overrides)
        if args.params:
            net.load_parameters(args.params)
        return net
    if args.params:
        return load_model(args.params)
    raise SystemExit("error: give --model NAME or --params FILE (with its .json sidecar)")


# ---------------------------------------------------------------------------------- commands
def cmd_gridding(args):
    from .model.gridding import analyze, format_report

    result = analyze(args.rates)
    if args.json:
        result = {k: v for k, v in result.items() if k != "coverage"}
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    return 0


def cmd_models(args):
    from .model.network import MODEL_SPECS

    for name in sorted(MODEL_SPECS):
        spec = MODEL_SPECS[name]
        classes = spec.get("classes", "classes=N")
        print("%-32s depth %-4s classes %s" % (name, spec["depth"], classes))
    return 0


def cmd_convert(args):
    from . import convert

    if args.source == "tusimple":
        config = convert.convert_tusimple(args.prefix, args.epoch, args.classes, args.out)
    else:
        config = convert.convert_onnx(args.onnx, args.classes, args.out)
    print("wrote %s (ResNet-%d, %d classes, cell width %d)"
          % (args.out, config["depth"], config["classes"], config["cell_width"]))
    return 0


def cmd_export(args):
    from .export import export_model

    net = _model_from_args(args)
    result = export_model(net, args.out, args.shape, onnx=args.onnx, check=not args.no_check)
    for path in result["files"]:
        print("wrote %s" % path)
    for key in ("symbol_diff", "onnx_diff"):
        for shape, diff in result.get(key, {}).items():
            print("%s at %s: %s" % (key.replace("_diff", ""), "x".join(map(str, shape)),
                                    json.dumps(diff)))
    return 0


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.workdir)
    return 0


# ---------------------------------------------------------------------------------- parser
def build_parser():
    p = argparse.ArgumentParser(
        prog="duc-hdc",
        description="DUC-HDC semantic segmentation (Wang et al., WACV 2018) on MXNet/Gluon.")
    p.add_argument("--version", action="version", version=duc_hdc.__version__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("demo", help="synthetic data -> RecordIO -> train -> evaluate -> predict "
                                    "-> export, on CPU in minutes")
    s.add_argument("--workdir", default="demo_out", help="where everything is written")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("gridding", help="gridding analysis of a chain of dilated 3x3 convs",
                       description="Receptive field, reached offsets and holes of a chain of "
                                   "dilated 3x3 convs; checks the paper's HDC condition.")
    s.add_argument("rates", type=_rates, help="dilation rates, input side first, e.g. 1,2,5")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_gridding)

    s = sub.add_parser("models", help="list the model names get_model accepts")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("convert", help="import original-release or ONNX-zoo weights")
    csub = s.add_subparsers(dest="source", metavar="SOURCE")
    csub.required = True
    t = csub.add_parser("tusimple", help="the original release's P-symbol.json + P-%%04d.params")
    t.add_argument("--prefix", required=True, help="checkpoint prefix P")
    t.add_argument("--epoch", type=int, required=True, help="checkpoint epoch E")
    t.add_argument("--classes", type=int, required=True, help="number of classes C")
    t.add_argument("--out", required=True, help="output FILE.params (+ FILE.json settings)")
    t.set_defaults(func=cmd_convert)
    o = csub.add_parser("onnx", help="the ONNX model zoo's ResNet101-DUC")
    o.add_argument("--onnx", required=True, help="the .onnx file")
    o.add_argument("--classes", type=int, required=True, help="number of classes C")
    o.add_argument("--out", required=True, help="output FILE.params (+ FILE.json settings)")
    o.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="symbol JSON + params (and ONNX), checked after writing")
    s.add_argument("--model", help="model name (see `duc-hdc models`)")
    s.add_argument("--classes", type=int, help="classes for a generic model name")
    s.add_argument("--params", help="weights to load (alone: rebuilt from FILE.json)")
    s.add_argument("--shape", type=_shape, required=True, help="N,3,H,W (H, W multiples of 8)")
    s.add_argument("--out", required=True, help="output PREFIX")
    s.add_argument("--onnx", action="store_true", help="also write PREFIX.onnx")
    s.add_argument("--no-check", action="store_true", help="skip the reload comparison")
    s.set_defaults(func=cmd_export)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # user errors: one clear line, no traceback (use -v for one)
        if args.verbose:
            raise
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
