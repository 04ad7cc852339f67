"""Commands about models and weights: models, gridding, download, convert, export, quantize,
benchmark."""
import argparse
import json
import logging
import os

import duc_hdc

from . import options

log = logging.getLogger("duc_hdc")


def cmd_models(args):
    from ..models.network import MODEL_SPECS

    for name in sorted(MODEL_SPECS):
        spec = MODEL_SPECS[name]
        print("%-32s depth %-4s classes %s" % (name, spec["depth"],
                                               spec.get("classes", "classes=N")))
    return 0


def cmd_gridding(args):
    from ..models.gridding import analyze, format_report

    result = analyze(args.rates)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "coverage"}, indent=2))
    else:
        print(format_report(result))
    return 0


def cmd_download(args):
    from ..hub import zoo

    if args.list or not args.name:
        for name in zoo.list_models():
            e = zoo.MODELS[name]
            print("%-40s %-12s %-8s %s" % (name, e.dataset, e.source, e.model or "backbone"))
        return 0
    print(zoo.describe(args.name))
    path = zoo.get_weights(args.name, root=args.root, base_url=args.base_url,
                           allow_unverified=args.trust, progress=options.progress(args),
                           timeout=args.timeout)
    print(path)
    return 0


def _convert_out(out, default_name):
    """--out DIR (written as DIR/default_name) or FILE.params."""
    if out.endswith(".params"):
        return out
    return os.path.join(out, default_name)


def cmd_convert(args):
    from ..hub import convert

    if args.source == "tusimple":
        out = _convert_out(args.out, "%s-%04d.params" % (os.path.basename(args.prefix),
                                                         args.epoch))
        config = convert.convert_tusimple(args.prefix, args.epoch, args.classes, out)
    else:
        out = _convert_out(args.out, os.path.splitext(os.path.basename(args.onnx))[0]
                           + ".params")
        config = convert.convert_onnx(args.onnx, args.classes, out)
    print("wrote %s (ResNet-%d, %d classes, cell width %d)"
          % (out, config["depth"], config["classes"], config["cell_width"]))
    return 0


def _network(args, ctx=None):
    """The network the model options name; a model name alone means its pretrained weights,
    with --random-weights (where offered) freshly initialized ones."""
    if getattr(args, "random_weights", False):
        if not args.model or args.params or getattr(args, "config", None):
            raise ValueError("--random-weights takes a model name (--model NAME) and no "
                             "--params / --config")
        return duc_hdc.get_model(args.model, classes=args.classes, ctx=ctx,
                                 **options.model_overrides(args))
    return duc_hdc.load(args.model, params=args.params, config=getattr(args, "config", None),
                        classes=getattr(args, "classes", None), ctx=ctx,
                        overrides=options.model_overrides(args), progress=options.progress(args))


def _out_name(args):
    """The file name a folder ``--out`` gets (export, quantize): the model name, or the
    weights' / artifact's file name (``w.params`` -> ``w``; ``DIR/tiny``,
    ``DIR/tiny-symbol.json`` -> ``tiny``)."""
    from ..models.network import MODEL_SPECS

    if args.model in MODEL_SPECS:
        return args.model
    source = str(args.params or args.model or getattr(args, "config", None))
    if os.path.isfile(source + "-symbol.json"):
        return os.path.basename(source)
    for suffix in ("-symbol.json", "-0000.params"):
        if source.endswith(suffix):
            return os.path.basename(source[:-len(suffix)])
    return os.path.basename(os.path.splitext(source)[0])


def _compiled(net, args):
    """``(prefix, precision)`` of a compiled bf16 / int8 graph (an ``export --precision`` or
    ``quantize`` PREFIX); None for a network."""
    from ..inference.compiled import InferenceNet
    from ..inference.graphs import precision_of
    from ..inference.loader import artifact_prefix

    if not isinstance(net, InferenceNet):
        return None
    source = str(args.params or args.model)
    return (artifact_prefix(source) or (source,))[0], precision_of(net)


def _refuse_compiled(command, compiled, what, hint=""):
    raise ValueError("%s: %s is a compiled %s graph; %s needs the network's weights "
                     "(FILE.params with its .json, --model NAME --params FILE, or a zoo name)%s"
                     % (command, compiled[0], compiled[1], what, hint))


def cmd_export(args):
    from ..inference.export import ONNX_OPSET, check_opset, export_model

    options.check_calibration(args)
    options.cpu_only(args, "export")
    if args.opset is not None:
        if not args.onnx:
            raise ValueError("--opset needs --onnx (it is the ONNX file's opset)")
        check_opset(args.opset)
    net = _network(args)
    source = args.params or args.model
    name = _out_name(args)
    compiled = _compiled(net, args)
    if compiled:  # written as it is; other precisions or ONNX are built from the weights
        from ..inference.export import export_as_compiled

        if args.onnx:
            _refuse_compiled("export", compiled, "--onnx (an fp32 graph)")
        if args.precision not in (None, compiled[1]):
            _refuse_compiled("export", compiled, "--precision %s" % args.precision)
        if args.calib_rec:
            _refuse_compiled("export", compiled, "--calib-rec (calibrating int8 ranges)")
        return _export_report(export_as_compiled(net, compiled[0], args.out, shape=args.shape,
                                                 check=not args.no_check, name=name,
                                                 reload=duc_hdc.load))
    weights = None if args.random_weights else source
    if args.precision in ("bf16", "int8"):
        from ..inference.export import export_compiled

        if args.onnx:
            raise ValueError("--onnx exports fp32 (ONNX Runtime and OpenVINO pick their own "
                             "precision); drop --onnx or --precision %s" % args.precision)
        result = export_compiled(net, args.out, args.precision,
                                 calib_images=options.calibration(args, net), weights=weights,
                                 name=name, shape=args.shape, check=not args.no_check,
                                 reload=duc_hdc.load)
    else:
        result = export_model(net, args.out, args.shape, onnx=args.onnx,
                              check=not args.no_check, weights=weights, name=name,
                              opset=args.opset or ONNX_OPSET)
    return _export_report(result)


def _export_report(result):
    print("prefix %s (--out is a %s)" % (result["prefix"], result["out_is"]))
    for path in result["files"]:
        print("wrote %s" % path)
    for key in ("symbol_diff", "onnx_diff"):
        for shape, diff in result.get(key, {}).items():
            print("%s at %s: %s" % (key.replace("_diff", ""), "x".join(map(str, shape)),
                                    json.dumps(diff)))
    return 0


def cmd_quantize(args):
    from ..evaluation.quantize import run_quantization
    from ..inference.export import export_prefix
    from ..inference.graphs import DUC_HEAD_LAYERS

    options.needs("--limit", args.limit, args.eval_rec, "limits the images of --eval-rec")
    options.cpu_only(args, "INT8 quantization (MKLDNN)")
    net = _network(args)
    compiled = _compiled(net, args)
    if compiled:
        _refuse_compiled("quantize", compiled, "quantizing", "; it is INT8 already: use it "
                         "as it is" if compiled[1] == "int8" else "")
    prefix, out_is = export_prefix(args.out, _out_name(args))  # --out as export reads it
    exclude = list(DUC_HEAD_LAYERS) if args.keep_head_fp32 else []
    if any(not part.strip() for part in args.exclude or []):  # "" is part of every name
        raise ValueError("--exclude \"\": an empty name part matches every convolution, "
                         "which would leave nothing in INT8; give a part of the names to keep "
                         "in fp32, e.g. --exclude head")
    exclude += list(args.exclude or [])
    result = run_quantization(net, args.calib_rec, prefix, num_calib=args.num_calib,
                              eval_rec=args.eval_rec, calib_mode=args.calib_mode,
                              exclude=exclude, dataset_name=args.dataset, limit=args.limit,
                              progress=options.progress(args))
    print("prefix %s (--out is a %s)" % (prefix, out_is))
    for path in result["files"]:
        print("wrote %s" % path)
    ops = result["ops"]
    print("int8 convolutions: %d, fp32 convolutions: %d (%s calibration on %d image(s), "
          "%.0f s)" % (ops["int8_conv"], ops["fp32_conv"], args.calib_mode,
                       result["quantization"]["num_calib"], result["quantize_s"]))
    if "int8_miou" in result:
        print("%d images: fp32 mIoU %.4f, int8 mIoU %.4f, accuracy cost %+.2f points"
              % (result["images"], result["fp32_miou"], result["int8_miou"],
                 result["miou_change"]))
    return 0


def cmd_benchmark(args):
    from ..inference.benchmark import format_report, run_benchmark
    from ..fileio import atomic_json, output_file_problem

    if args.config:
        raise ValueError("benchmark --config: time a model name (random weights) or an "
                         "artifact (--model FILE.params / PREFIX); the recipe's model is "
                         "--model <its model.name> with --base-width etc.")
    if args.mode in ("whole", "sliding"):
        raise ValueError("--mode %s is the inference protocol of predict and evaluate; "
                         "benchmark times one forward pass of --shape (a sliding window: "
                         "--shape N,3,CROP_H,CROP_W) in --precision fp32|bf16|int8 (--plain: "
                         "the unfused network)" % args.mode)
    overrides = options.model_overrides(args)
    problem = args.json and output_file_problem(args.json)
    if problem:  # before the (long) benchmark, as evaluate's --out-json
        raise ValueError("--json: %s" % problem)
    result = run_benchmark(args.model, args.shape, iters=args.iters, mode=args.mode,
                           precision=args.precision, graph="plain" if args.plain else None,
                           classes=args.classes, params=args.params,
                           gpus=None if args.cpu else args.gpus, fp16=args.fp16,
                           cudnn_autotune=args.cudnn_autotune, warmup=args.warmup, **overrides)
    print(format_report(result))
    if args.json:
        atomic_json(args.json, result)
        print("wrote %s" % args.json)
    return 0


def cmd_env(args):
    from .. import runtime

    from ..inference.merging import merge_state
    from ..inference.splitting import split_state
    from ..inference.streams import stream_state

    rows = runtime.environment_report(probe=not args.no_probe)
    rows.append(("centre-tap merge", merge_state()[1]))
    fp32_split, bf16_split = split_state(), split_state(precision="bf16")
    rows.append(("input split", fp32_split[1]))
    if bf16_split != fp32_split:
        rows.append(("input split bf16", bf16_split[1]))
    rows.append(("residual streams", stream_state()[1]))
    print(runtime.format_environment(rows))
    return 0


def register(sub):
    s = sub.add_parser("env", help="the CPU, AMX decision, oneDNN ISA in use, versions")
    s.add_argument("--no-probe", action="store_true",
                   help="skip running one convolution to read the ISA oneDNN uses")
    s.set_defaults(func=cmd_env)

    s = sub.add_parser("models", help="list the model names get_model accepts")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("gridding", help="gridding analysis of a chain of dilated 3x3 convs",
                       description="Receptive field, reached offsets and holes of a chain of "
                                   "dilated 3x3 convs; checks the paper's HDC condition.")
    s.add_argument("rates", type=options.rates, help="dilation rates, input side first, "
                                                     "e.g. 1,2,5")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_gridding)

    s = sub.add_parser("download", help="fetch and verify pretrained weights (--list: names)")
    s.add_argument("name", nargs="?", help="zoo name; omit to list them")
    s.add_argument("--list", action="store_true", help="list the zoo")
    s.add_argument("--root", help="cache folder (default $DUC_HDC_HOME or ~/.duc_hdc/models)")
    s.add_argument("--base-url", help="mirror replacing everything before the file name "
                                      "(https://, http://, file://)")
    s.add_argument("--trust", action="store_true", help="accept an entry without a checksum")
    s.add_argument("--timeout", type=options.positive_float, default=60.0,
                   help="seconds without data (connecting or mid-transfer) before an attempt "
                        "gives up (default 60)")
    options.add_progress(s)
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("convert", help="import original-release or ONNX-zoo weights")
    csub = s.add_subparsers(dest="source", metavar="SOURCE")
    csub.required = True
    t = csub.add_parser("tusimple", help="the original release's P-symbol.json + P-%%04d.params")
    t.add_argument("--prefix", required=True, help="checkpoint prefix P")
    t.add_argument("--epoch", type=int, required=True, help="checkpoint epoch E")
    t.add_argument("--classes", type=options.positive_int, required=True,
                   help="number of classes C")
    t.add_argument("--out", required=True, help="output folder (or FILE.params); the settings "
                                                "go beside it as FILE.json")
    t.set_defaults(func=cmd_convert)
    o = csub.add_parser("onnx", help="the ONNX model zoo's ResNet101-DUC")
    o.add_argument("--onnx", required=True, help="the .onnx file")
    o.add_argument("--classes", type=options.positive_int, required=True,
                   help="number of classes C")
    o.add_argument("--out", required=True, help="output folder (or FILE.params); the settings "
                                                "go beside it as FILE.json")
    o.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="symbol JSON + params (and ONNX), checked after writing",
                       description="Writes PREFIX-symbol.json, PREFIX-0000.params, PREFIX.json "
                                   "(and PREFIX.onnx); every duc-hdc command loads them back "
                                   "with --model PREFIX.")
    options.add_model(s)
    s.add_argument("--random-weights", action="store_true",
                   help="export a model name with random weights (warns)")
    s.add_argument("--shape", type=options.shape, required=True,
                   help="N,3,H,W (H, W multiples of 8)")
    s.add_argument("--out", required=True,
                   help="prefix (DIR/NAME -> DIR/NAME-symbol.json, -0000.params, .json[, .onnx]) "
                        "or folder (ending in / or existing -> DIR/<model name>)")
    s.add_argument("--onnx", action="store_true", help="also write PREFIX.onnx")
    s.add_argument("--opset", type=options.positive_int, default=None,
                   help="the ONNX file's opset (default 13, what MXNet's translations write; "
                        "up to the installed onnx's newest)")
    s.add_argument("--no-check", action="store_true", help="skip the reload comparison")
    options.add_precision(s)
    options.add_devices(s)
    options.add_progress(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("quantize", help="INT8 post-training quantization (MKLDNN) with the "
                                        "accuracy cost measured",
                       description="Calibrates int8 ranges on a few images of --calib-rec, "
                                   "writes PREFIX-symbol.json, PREFIX-0000.params and "
                                   "PREFIX.json, and with --eval-rec prints the mIoU of fp32 "
                                   "and int8. Every command loads it with --model PREFIX.")
    options.add_model(s)
    s.add_argument("--calib-rec", required=True, help=".rec whose images calibrate the ranges")
    s.add_argument("--num-calib", type=options.positive_int, default=options.NUM_CALIB,
                   help="calibration images, spread over the file (default %d)"
                        % options.NUM_CALIB)
    s.add_argument("--calib-mode", choices=("naive", "entropy"), default="naive",
                   help="thresholds from min/max (naive, default) or KL divergence (entropy)")
    s.add_argument("--keep-head-fp32", action="store_true",
                   help="leave the DUC head's dilated convolutions in fp32")
    s.add_argument("--exclude", action="append", metavar="NAME_PART",
                   help="leave layers whose name contains NAME_PART in fp32 (repeatable)")
    s.add_argument("--out", required=True,
                   help="prefix (DIR/NAME -> DIR/NAME-symbol.json, -0000.params, .json) or "
                        "folder (ending in / or existing -> DIR/<model name>), as for export")
    s.add_argument("--eval-rec", help="labelled .rec: print fp32 and int8 mIoU")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   default="cityscapes", help="label table of --eval-rec (default cityscapes)")
    s.add_argument("--limit", type=options.positive_int, help="evaluate the first N images only")
    options.add_devices(s)
    options.add_progress(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("benchmark", help="latency, images/s, GFLOP/s and peak memory of one "
                                         "inference path",
                       description="Times one network at one input size (random weights unless "
                                   "--params): --precision fp32 (BatchNorm folded + MKLDNN "
                                   "fusion, the CPU default of predict and evaluate; --plain: "
                                   "the hybridized network), bf16, int8 (post-training "
                                   "quantization; speed only, see `duc-hdc quantize` for "
                                   "accuracy).")
    options.add_model(s)
    s.add_argument("--shape", type=options.shape, required=True,
                   help="N,3,H,W (H, W multiples of 8)")
    s.add_argument("--iters", type=options.positive_int, default=10,
                   help="timed runs (default 10)")
    s.add_argument("--warmup", type=options.non_negative_int, default=1,
                   help="untimed runs first (default 1)")
    options.add_precision(s, calibration=False)
    s.add_argument("--plain", action="store_true",
                   help="fp32: the hybridized network itself, not the fused graph")
    # the former spelling (fused = --precision fp32, fp32 = --plain, int8 = --precision int8),
    # still taken but not offered: --mode is predict's and evaluate's inference protocol
    s.add_argument("--mode", help=argparse.SUPPRESS)
    options.add_devices(s)
    options.add_progress(s)
    s.add_argument("--json", help="also write the measurements to this JSON file")
    s.set_defaults(func=cmd_benchmark)
