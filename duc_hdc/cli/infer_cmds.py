"""Commands that run a trained network on data: evaluate, predict."""
import re
import sys

from . import options


def _segmenter(args):
    """The Segmenter the model, device, protocol and precision options name."""
    import duc_hdc

    from ..inference.segmenter import Segmenter

    options.check_calibration(args)
    ctx = options.devices(args)[0]
    net = duc_hdc.load(args.model, params=args.params, config=args.config,
                       classes=args.classes, ctx=ctx, overrides=options.model_overrides(args),
                       progress=options.progress(args))
    calib_images = options.calibration(args, net)
    try:
        return Segmenter(net, ctx=ctx, scales=args.scales, flip=args.flip, mode=args.mode,
                         crop_size=args.crop_size, stride=args.stride,
                         batch_size=args.batch_size, fp16=args.fp16, precision=args.precision,
                         calib_images=calib_images)
    except ValueError as e:  # its protocol checks name its arguments; the user typed options
        if not _OPTION_NAMES.match(str(e)):
            raise
        raise ValueError(_OPTION_NAMES.sub(lambda m: "--" + m.group(0).replace("_", "-"),
                                           str(e)))


#: the Segmenter's argument names that are predict's and evaluate's options
_OPTION_NAMES = re.compile(r"(?<![-\w])(?:crop_size|stride|mode|batch_size|scales)(?![\w])")


def cmd_evaluate(args):
    from ..evaluation.evaluate import class_names, run_evaluation

    options.needs("--worst", args.worst, args.report,
                  "picks the images the --report DIR shows")
    options.needs("--split", args.split, args.root, "picks a split under --root (a --rec file "
                  "is one split already)")
    metric, summary = run_evaluation(
        config=args.config, model=args.model, params=args.params, classes=args.classes,
        rec=args.rec, root=args.root, split=args.split or "val", dataset_name=args.dataset,
        save_dir=args.out, out_json=args.out_json, limit=args.limit, report_dir=args.report,
        worst=args.worst, progress=options.progress(args),
        segmenter=lambda: _segmenter(args))
    print(metric.per_class_table(class_names(summary["dataset"], metric.num_classes)))
    pixacc, miou = metric.get()
    print("%d images: mIoU %.4f, pixel accuracy %.4f" % (summary["images"], miou, pixacc))
    if summary["save_dir"]:
        print("predictions in %s" % summary["save_dir"])
    if summary["json"]:
        print("wrote %s" % summary["json"])
    if summary.get("report"):
        print("report: %s" % summary["report"])
    return 0


def cmd_predict(args):
    from ..inference.predict import predict_paths, prediction_report

    segmenter = _segmenter(args)
    result = predict_paths(segmenter, args.inputs, args.out, dataset=args.dataset,
                           progress=options.progress(args))
    lines, problems, status = prediction_report(result, args.out)
    for line in lines:
        print(line)
    for line in problems:
        print(line, file=sys.stderr)
    return status


def _inference_options(s):
    g = s.add_argument_group("inference protocol")
    g.add_argument("--mode", choices=("whole", "sliding"), default="whole",
                   help="whole padded image (the release's protocol) or sliding windows")
    g.add_argument("--crop-size", type=options.size, help="sliding window H,W (multiples of 8)")
    g.add_argument("--stride", type=options.size, help="sliding window step S or H,W "
                                                       "(default 2/3 of the crop)")
    g.add_argument("--scales", type=options.scales, default=[1.0],
                   help="image scales, e.g. 0.75,1.0,1.25 (softmax averaged)")
    g.add_argument("--flip", action="store_true", help="also average the mirrored image")
    g.add_argument("--batch-size", type=options.positive_int, default=1,
                   help="windows per forward pass")
    options.add_devices(s)
    options.add_precision(s)
    options.add_progress(s)


def register(sub):
    s = sub.add_parser("evaluate", help="mIoU on a labelled split; official Cityscapes output",
                       description="Per-class IoU, mIoU and pixel accuracy (the official "
                                   "Cityscapes rules), with optional labelId PNGs for the "
                                   "official script / server.")
    options.add_model(s)
    d = s.add_mutually_exclusive_group()
    d.add_argument("--rec", help="evaluation .rec (with its .idx)")
    d.add_argument("--root", help="dataset folder in its official layout")
    s.add_argument("--split", help="split under --root (default val)")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   help="label table (default: the config's, else cityscapes)")
    _inference_options(s)
    s.add_argument("--out", "--save-dir", dest="out", metavar="DIR",
                   help="folder for the predictions (labelIds / trainIds, colour) and "
                        "metrics.json")
    s.add_argument("--out-json", help="metrics JSON path (default DIR/metrics.json)")
    s.add_argument("--limit", type=options.positive_int, help="evaluate the first N images only")
    s.add_argument("--report", metavar="DIR",
                   help="write an HTML report (index.html, figures, report.json) to DIR")
    s.add_argument("--worst", type=options.positive_int, metavar="N",
                   help="worst images (by per-image mIoU) in the --report (default 8)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="segment images, folders, globs and videos",
                       description="Writes NAME_trainIds.png, NAME_color.png and "
                                   "NAME_overlay.png per image; per-frame PNGs and "
                                   "NAME_overlay.avi per video.")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder, glob or video")
    options.add_model(s)
    s.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created); outputs mirror the inputs' paths below their "
                        "common folder (a/x.png -> DIR/a/x_trainIds.png, _color.png, "
                        "_overlay.png; v.mp4 -> DIR/v/frame_NNNNNN_*.png and DIR/v_overlay.avi); "
                        "exit 0 all predicted, 1 none, 3 some skipped or incomplete")
    s.add_argument("--dataset", choices=("cityscapes", "voc", "kitti_road"),
                   help="palette (default: the table with the model's class count)")
    _inference_options(s)
    s.set_defaults(func=cmd_predict)
