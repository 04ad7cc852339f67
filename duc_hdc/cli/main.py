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


def _floats(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, got %r" % text)
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("expected positive numbers, got %r" % text)
    return values


def _size(text):
    values = _ints(text, "SIZE")
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError("expected H,W or a single integer, got %r" % text)
    return tuple(values)


def _user_errors():
    """Exceptions that mean bad input or a failed run: one line for the user, no traceback."""
    from ..hub import zoo
    from ..training.trainer import TrainingError

    # ValueError covers ConfigError, ConversionError and the data's bad-sample errors;
    # OSError covers missing files and RecordFileError
    return (ValueError, LookupError, OSError, TrainingError, zoo.DownloadError,
            zoo.WeightsNotAvailableError)


def _segmenter_options(args):
    from ..inference.benchmark import check_gpu_options

    # the same GPU options as `duc-hdc benchmark`: refused with a clear message without a GPU
    ctx = check_gpu_options(args.gpu, args.fp16, args.cudnn_autotune, flag="--gpu")
    return dict(ctx=ctx, scales=args.scales, flip=args.flip, mode=args.mode,
                crop_size=args.crop_size, stride=args.stride, batch_size=args.batch_size,
                fp16=args.fp16)


def _gpu_options(s, gpus="--gpus"):
    """--fp16 and --cudnn-autotune, shared by every command that can run on GPUs."""
    s.add_argument("--fp16", action="store_true",
                   help="GPU: float16 with MXNet AMP (unmeasured here: no GPU)")
    s.add_argument("--cudnn-autotune", type=int, choices=(0, 1, 2),
                   help="GPU: MXNET_CUDNN_AUTOTUNE_DEFAULT (0 off, 1 limited workspace, "
                        "2 fastest); needs %s" % gpus)


def _model_from_args(args):
    """The network --model / --params / --config name, through the one loader."""
    return duc_hdc.load(getattr(args, "model", None), params=getattr(args, "params", None),
                        config=getattr(args, "config", None),
                        classes=getattr(args, "classes", None))


def _recipes():
    from ..config import available_configs

    return available_configs()


# ---------------------------------------------------------------------------------- commands
def cmd_gridding(args):
    from ..models.gridding import analyze, format_report

    result = analyze(args.rates)
    if args.json:
        result = {k: v for k, v in result.items() if k != "coverage"}
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    return 0


def cmd_models(args):
    from ..models.network import MODEL_SPECS

    for name in sorted(MODEL_SPECS):
        spec = MODEL_SPECS[name]
        classes = spec.get("classes", "classes=N")
        print("%-32s depth %-4s classes %s" % (name, spec["depth"], classes))
    return 0


def cmd_convert(args):
    from ..hub import convert

    if args.source == "tusimple":
        config = convert.convert_tusimple(args.prefix, args.epoch, args.classes, args.out)
    else:
        config = convert.convert_onnx(args.onnx, args.classes, args.out)
    print("wrote %s (ResNet-%d, %d classes, cell width %d)"
          % (args.out, config["depth"], config["classes"], config["cell_width"]))
    return 0


def cmd_export(args):
    from ..inference.export import export_model

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
    from ..demo.pipeline import run_demo

    result = run_demo(args.workdir, overrides=args.set)
    print("synthetic data:  %s" % result["data"])
    print("RecordIO:        %s" % ", ".join(result["rec"].values()))
    print("training run:    %s (curves: %s)" % (result["run"], result["curves"]))
    print("evaluation:      %s" % result["eval"])
    print("predictions:     %s" % result["predictions"])
    print("export:          %s" % ", ".join(result["export"]))
    print("pixel accuracy:  %.4f" % result["pixel_accuracy"])
    print("time:            %.0f s" % result["seconds"])
    print("mIoU: %.4f" % result["mean_iou"])
    return 0


def cmd_train(args):
    from ..inference.benchmark import set_cudnn_autotune
    from ..config import load_config
    from ..training.trainer import parse_devices

    overrides = list(args.set or [])
    if args.kvstore:
        overrides.append("train.kvstore=%s" % args.kvstore)
    if args.fp16:
        overrides.append("train.amp=true")  # AMP mixed precision; checked against the devices
    cfg = load_config(args.config, overrides)
    if args.cudnn_autotune is not None and (args.cpu or not args.gpus):
        raise ValueError("--cudnn-autotune tunes cuDNN convolutions: it needs --gpus")
    set_cudnn_autotune(args.cudnn_autotune)
    ctx = parse_devices(None if args.cpu else args.gpus, cpu_devices=args.cpu_devices)
    summary = duc_hdc.train(cfg, ctx=ctx, resume=args.resume, progress=not args.no_progress)
    best = summary["best"]
    print("trained %d iterations; final parameters %s" % (summary["iterations"],
                                                          summary["final"]))
    if best:
        print("best val mIoU %.4f (epoch %d)" % (best["mean_iou"], best["epoch"]))
    return 0


def cmd_launch(args):
    from ..training.distributed import launch

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if command and command[0] == "duc-hdc":
        # the same interpreter and package as the launcher, wherever it is installed
        command = [sys.executable, "-m", "duc_hdc.cli"] + command[1:]
    return launch(command, args.num_workers, args.num_servers, hostfile=args.hostfile,
                  timeout=args.timeout)


def cmd_evaluate(args):
    from ..evaluation.evaluate import class_names, run_evaluation

    metric, summary = run_evaluation(
        config=args.config, model=args.model, params=args.params, classes=args.classes,
        rec=args.rec, root=args.root, split=args.split, dataset_name=args.dataset,
        save_dir=args.save_dir, out_json=args.out_json, limit=args.limit,
        **_segmenter_options(args))
    print(metric.per_class_table(class_names(summary["dataset"], metric.num_classes)))
    pixacc, miou = metric.get()
    print("%d images: mIoU %.4f, pixel accuracy %.4f" % (summary["images"], miou, pixacc))
    if summary["save_dir"]:
        print("predictions in %s" % summary["save_dir"])
    if summary["json"]:
        print("wrote %s" % summary["json"])
    return 0


def cmd_predict(args):
    from ..inference.segmenter import run_prediction

    result = run_prediction(args.inputs, args.out, model=args.model, params=args.params,
                            classes=args.classes, dataset=args.dataset,
                            **_segmenter_options(args))
    print("%d image(s), %d frame(s) from %d video(s) written to %s"
          % (result["images"], result["frames"], result["videos"], args.out))
    if result["skipped"]:
        print("%d input(s) unreadable, skipped:" % len(result["skipped"]), file=sys.stderr)
        for path, reason in result["skipped"]:
            print("  %s: %s" % (path, reason), file=sys.stderr)
    return 0 if result["images"] + result["frames"] else 1


def cmd_download(args):
    from ..hub import zoo

    if args.list or not args.name:
        for name in zoo.list_models():
            e = zoo.MODELS[name]
            print("%-40s %-12s %-8s %s" % (name, e.dataset, e.source, e.model or "backbone"))
        return 0
    print(zoo.describe(args.name))
    path = zoo.get_weights(args.name, root=args.root, base_url=args.base_url,
                           allow_unverified=args.trust)
    print(path)
    return 0


def cmd_benchmark(args):
    from ..inference.benchmark import format_report, run_benchmark

    overrides = {"base_width": args.base_width} if args.base_width else {}
    result = run_benchmark(args.model, args.shape, iters=args.iters, mode=args.mode,
                           classes=args.classes, params=args.params, gpus=args.gpus,
                           fp16=args.fp16, cudnn_autotune=args.cudnn_autotune,
                           warmup=args.warmup, **overrides)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print("wrote %s" % args.json)
    return 0


def cmd_quantize(args):
    from ..inference.benchmark import check_gpu_options
    from ..evaluation.quantize import run_quantization
    from ..inference.graphs import DUC_HEAD_LAYERS

    if args.gpus:
        check_gpu_options(gpus=args.gpus)  # refuses on CPU-only machines
        raise SystemExit("error: INT8 quantization (MKLDNN) runs on the CPU; drop --gpus")
    net = _model_from_args(args)
    exclude = list(DUC_HEAD_LAYERS) if args.keep_head_fp32 else []
    exclude += list(args.exclude or [])
    result = run_quantization(net, args.calib_rec, args.out, num_calib=args.num_calib,
                              eval_rec=args.eval_rec, calib_mode=args.calib_mode,
                              exclude=exclude, dataset_name=args.dataset, limit=args.limit,
                              progress=not args.no_progress)
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
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the synthetic recipe, e.g. --set train.epochs=8")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train a recipe on one or more devices",
                       description="Train from a YAML recipe (packaged name or path).")
    s.add_argument("--config", required=True, help="recipe name (%s) or YAML path"
                   % ", ".join(_recipes()))
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.lr=0.01 (repeatable)")
    dev = s.add_mutually_exclusive_group()
    dev.add_argument("--gpus", help="GPU ids, e.g. 0,1,2,3")
    dev.add_argument("--cpu", action="store_true", help="train on the CPU (the default without "
                                                        "--gpus)")
    s.add_argument("--cpu-devices", type=int, default=1,
                   help="CPU contexts to split each batch over (exercises multi-device code)")
    s.add_argument("--kvstore", help="local, device, dist_sync, dist_device_sync, dist_async "
                                     "(same as --set train.kvstore=...)")
    s.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    _gpu_options(s)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("launch", help="start a dist_sync job: scheduler, servers, workers",
                       description="Run COMMAND as the workers of a parameter-server job, e.g. "
                                   "duc-hdc launch -n 2 -s 1 -- duc-hdc train --config "
                                   "cityscapes --set train.kvstore=dist_sync")
    s.add_argument("-n", "--num-workers", type=int, required=True)
    s.add_argument("-s", "--num-servers", type=int, default=1)
    s.add_argument("--hostfile", help="hosts for servers and workers (ssh); default: all local")
    s.add_argument("--timeout", type=float, help="stop the job after this many seconds")
    s.add_argument("command", nargs=argparse.REMAINDER, help="-- then the worker command")
    s.set_defaults(func=cmd_launch)

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

    def inference_options(s):
        s.add_argument("--mode", choices=("whole", "sliding"), default="whole",
                       help="whole padded image (the release's protocol) or sliding windows")
        s.add_argument("--crop-size", type=_size, help="sliding window H,W (multiples of 8)")
        s.add_argument("--stride", type=_size, help="sliding window step S or H,W "
                                                    "(default 2/3 of the crop)")
        s.add_argument("--scales", type=_floats, default=[1.0],
                       help="image scales, e.g. 0.75,1.0,1.25 (softmax averaged)")
        s.add_argument("--flip", action="store_true", help="also average the mirrored image")
        s.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
        s.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
        _gpu_options(s, gpus="a GPU")

    s = sub.add_parser("evaluate", help="mIoU on a labelled split; official Cityscapes output",
                       description="Per-class IoU, mIoU and pixel accuracy (the official "
                                   "Cityscapes rules), with optional labelId PNGs for the "
                                   "official script / server.")
    m = s.add_mutually_exclusive_group()
    m.add_argument("--config", help="recipe name or YAML (model and data.val_rec)")
    m.add_argument("--model", help="zoo or model name (pretrained, or with --params)")
    s.add_argument("--params", help="weights (alone: FILE.params + FILE.json sidecar)")
    s.add_argument("--classes", type=int, help="classes for a generic model name")
    d = s.add_mutually_exclusive_group()
    d.add_argument("--rec", help="evaluation .rec (with its .idx)")
    d.add_argument("--root", help="dataset folder in its official layout")
    s.add_argument("--split", default="val", help="split under --root (default val)")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   help="label table (default: the config's, else cityscapes)")
    inference_options(s)
    s.add_argument("--save-dir", help="write predictions (labelIds / trainIds, colour) and "
                                      "metrics.json here")
    s.add_argument("--out-json", help="metrics JSON path (default SAVE_DIR/metrics.json)")
    s.add_argument("--limit", type=int, help="evaluate the first N images only")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="segment images, folders, globs and videos",
                       description="Writes NAME_trainIds.png, NAME_color.png and "
                                   "NAME_overlay.png per image; per-frame PNGs and "
                                   "NAME_overlay.avi per video.")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder, glob or video")
    s.add_argument("--model", help="zoo or model name (pretrained, or with --params)")
    s.add_argument("--params", help="weights (alone: FILE.params + FILE.json sidecar)")
    s.add_argument("--classes", type=int, help="classes for a generic model name")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   help="palette (default: the table with the model's class count)")
    inference_options(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("benchmark", help="latency, images/s, GFLOP/s and peak memory of one "
                                         "inference path",
                       description="Times one network at one input size (random weights unless "
                                   "--params). Modes: fp32 (hybridized), fused (BatchNorm "
                                   "folded + MKLDNN fusion, the CPU default of predict and "
                                   "evaluate), int8 (post-training quantization; speed only, "
                                   "see `duc-hdc quantize` for accuracy).")
    s.add_argument("--model", required=True, help="model name (see `duc-hdc models`)")
    s.add_argument("--classes", type=int, help="classes for a generic model name")
    s.add_argument("--base-width", type=int, help="narrower network (tests, quick looks)")
    s.add_argument("--params", help="weights to load (default: random)")
    s.add_argument("--shape", type=_shape, required=True, help="N,3,H,W (H, W multiples of 8)")
    s.add_argument("--iters", type=int, default=10, help="timed runs (default 10)")
    s.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    s.add_argument("--mode", choices=("fp32", "fused", "int8"), default="fused",
                   help="inference path (default fused)")
    s.add_argument("--gpus", help="GPU id(s) (first one used); refused without a GPU")
    _gpu_options(s)
    s.add_argument("--json", help="also write the measurements to this JSON file")
    s.set_defaults(func=cmd_benchmark)

    s = sub.add_parser("quantize", help="INT8 post-training quantization (MKLDNN) with the "
                                        "accuracy cost measured",
                       description="Calibrates int8 ranges on a few images of --calib-rec, "
                                   "writes PREFIX-symbol.json, PREFIX-0000.params and "
                                   "PREFIX.json, and with --eval-rec prints the mIoU of fp32 "
                                   "and int8. The INT8 model runs with `duc-hdc evaluate / "
                                   "predict --params PREFIX-0000.params`.")
    s.add_argument("--model", help="model name (with --params: its weights)")
    s.add_argument("--classes", type=int, help="classes for a generic model name")
    s.add_argument("--params", help="trained weights (alone: FILE.params + FILE.json sidecar)")
    s.add_argument("--calib-rec", required=True, help=".rec whose images calibrate the ranges")
    s.add_argument("--num-calib", type=int, default=4,
                   help="calibration images, spread over the file (default 4)")
    s.add_argument("--calib-mode", choices=("naive", "entropy"), default="naive",
                   help="thresholds from min/max (naive, default) or KL divergence (entropy)")
    s.add_argument("--keep-head-fp32", action="store_true",
                   help="leave the DUC head's dilated convolutions in fp32")
    s.add_argument("--exclude", action="append", metavar="NAME_PART",
                   help="leave layers whose name contains NAME_PART in fp32 (repeatable)")
    s.add_argument("--out", required=True, help="output PREFIX")
    s.add_argument("--eval-rec", help="labelled .rec: print fp32 and int8 mIoU")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   default="cityscapes", help="label table of --eval-rec (default cityscapes)")
    s.add_argument("--limit", type=int, help="evaluate the first N images only")
    s.add_argument("--gpus", help="refused: INT8 runs on the CPU")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("download", help="fetch and verify pretrained weights (--list: names)")
    s.add_argument("name", nargs="?", help="zoo name; omit to list them")
    s.add_argument("--list", action="store_true", help="list the zoo")
    s.add_argument("--root", help="cache folder (default $DUC_HDC_HOME or ~/.duc_hdc/models)")
    s.add_argument("--base-url", help="mirror replacing everything before the file name "
                                      "(https://, http://, file://)")
    s.add_argument("--trust", action="store_true", help="accept an entry without a checksum")
    s.set_defaults(func=cmd_download)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except _user_errors() as e:
        # one clear line, no traceback (-v shows it)
        if args.verbose:
            raise
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
