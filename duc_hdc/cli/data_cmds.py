"""Commands about data: ``duc-hdc data`` (datasets -> RecordIO, synthetic scenes) and ``demo``."""
import argparse
import os
import signal
import time

from ..stops import Stopped
from . import options

_DOCS = {
    "cityscapes": "Cityscapes split -> RecordIO (labelIds -> 19 trainIds). ROOT holds "
                  "leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/"
                  "*_gtFine_labelIds.png (gtCoarse/ with --coarse). Every record holds the "
                  "image, the trainId label (255 = ignored) and metadata: the image's name and "
                  "the release's 7 crop anchors. The test split is written without labels.",
    "voc": "PASCAL VOC 2012 (optionally with SBD) -> RecordIO. --root is VOCdevkit/VOC2012 "
           "(JPEGImages/, SegmentationClass/ palette PNGs with 255 = boundary, ImageSets/"
           "Segmentation/*.txt); --sbd-root is SBD's benchmark_RELEASE/dataset (img/, cls/*.mat, "
           "train.txt, val.txt). train_aug = VOC train + SBD train + SBD val without any VOC val "
           "image (10,582 images); VOC's annotation is used where it exists, SBD's elsewhere. "
           "Without --sbd-root, train_aug reads SBD's labels as PNGs from "
           "VOC2012/SegmentationClassAug/ (as most copies of the augmented set come).",
    "kitti_road": "KITTI road -> RecordIO. --root is data_road/. 'train' reads training/"
                  "image_2/<cat>_<num>.png with training/gt_image_2/<cat>_road_<num>.png: "
                  "magenta road -> 1, red non-road -> 0, any other colour -> 255. 'test' reads "
                  "testing/image_2 (images only).",
}


_SBD_LAYOUT = ("SBD's benchmark_RELEASE/dataset folder (train.txt, val.txt, img/, cls/*.mat) "
               "or benchmark_RELEASE holding it")


def _inside(path, folder):
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _conversion_kwargs(args):
    if args.quality is not None and args.encoding != "jpg":
        raise ValueError("--quality %d sets the JPEG quality of --encoding jpg; with --encoding "
                         "%s the source bytes are kept as they are: drop it or add --encoding "
                         "jpg" % (args.quality, args.encoding))
    return dict(encoding=args.encoding, quality=95 if args.quality is None else args.quality,
                skip_bad=args.skip_bad,
                num_workers=args.workers, progress=options.progress(args))


def _layout(args):
    """What --root must hold for this dataset and split, with the user's root in the paths."""
    root = args.root.rstrip("/") or "/"
    if args.dataset == "cityscapes":
        gt = "gtCoarse" if args.coarse else "gtFine"
        return ("the Cityscapes layout {r}/leftImg8bit/{s}/<city>/*_leftImg8bit.png with "
                "{r}/{gt}/{s}/<city>/*_{gt}_labelIds.png (--root is the folder holding "
                "leftImg8bit/ and {gt}/)".format(r=root, s=args.split, gt=gt))
    if args.dataset == "voc":
        lists = "train.txt and val.txt" if args.split == "train_aug" else args.split + ".txt"
        return ("the PASCAL VOC 2012 layout {r}/ImageSets/Segmentation/{l}, {r}/JPEGImages/*.jpg "
                "and {r}/SegmentationClass/*.png (--root is VOCdevkit/VOC2012 or VOCdevkit "
                "holding it; train_aug also "
                "needs --sbd-root with train.txt, val.txt, img/ and cls/*.mat, or "
                "{r}/SegmentationClassAug/*.png)"
                .format(r=root, l=lists))
    if args.split == "train":
        return ("the KITTI road layout {r}/training/image_2/<cat>_<num>.png with "
                "{r}/training/gt_image_2/<cat>_road_<num>.png (--root is data_road/)"
                .format(r=root))
    return "the KITTI road layout {r}/testing/image_2/*.png (--root is data_road/)".format(r=root)


def _record_prefix(out, split):
    """``--out`` as the prefix of the three files: ``DIR/`` (or an existing folder) ->
    ``DIR/SPLIT``; ``PREFIX.rec`` (``.idx``, ``.lst``) -> ``PREFIX`` (it wrote PREFIX.rec.rec)."""
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        return os.path.join(out, split)
    base, ext = os.path.splitext(out)
    return base if ext in (".rec", ".idx", ".lst") else out


def cmd_data(args):
    from ..data import datasets
    from ..data.recordio import BadSampleError, EmptySplitError

    if not os.path.isdir(args.root):
        raise ValueError("--root %s %s; expected %s" % (
            args.root, "is not a folder" if os.path.exists(args.root) else "does not exist",
            _layout(args)))
    sbd = getattr(args, "sbd_root", None)
    if sbd is not None and args.split != "train_aug":
        raise ValueError("--sbd-root %s is used only by --split train_aug (VOC train + SBD "
                         "train and val, without VOC val); --split %r reads VOC's own list: "
                         "drop --sbd-root or use --split train_aug" % (sbd, args.split))
    if sbd is not None and not os.path.isdir(sbd):
        raise ValueError("--sbd-root %s %s; expected %s" % (
            sbd, "is not a folder" if os.path.exists(sbd) else "does not exist", _SBD_LAYOUT))
    args.out = _record_prefix(args.out, args.split)
    kwargs = _conversion_kwargs(args)
    try:
        if args.dataset == "cityscapes":
            report = datasets.convert_cityscapes(args.root, args.split, args.out,
                                                 coarse=args.coarse, **kwargs)
        elif args.dataset == "voc":
            report = datasets.convert_voc(args.root, args.split, args.out,
                                          sbd_root=args.sbd_root, **kwargs)
        else:
            report = datasets.convert_kitti_road(args.root, args.split, args.out, **kwargs)
    except EmptySplitError as err:
        # no file to blame: the folder is not in the layout the dataset expects
        expected = ("--sbd-root to be " + _SBD_LAYOUT if sbd is not None and
                    _inside(err.path, sbd) else _layout(args))
        raise EmptySplitError(err.path, "%s; nothing was written. Expected %s"
                              % (err.reason, expected)) from None
    except BadSampleError as err:
        raise BadSampleError(err.path, "%s; nothing was written%s" % (
            err.reason, "" if args.skip_bad else
            " (use --skip-bad to convert the other files)")) from None
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the command exits 130 or 143
        raise Stopped(getattr(e, "signum", signal.SIGINT), "nothing was written") from None
    print(report.summary())
    return 0


def cmd_synthetic(args):
    from ..demo.synthetic import make_synthetic_cityscapes

    if args.train + args.val + args.test == 0:
        raise ValueError("--train 0 --val 0 --test 0: nothing to write; give a number of "
                         "scenes for at least one split")
    held = [d for d in ("leftImg8bit", "gtFine") if os.path.isdir(os.path.join(args.out, d))
            and any(files for _, _, files in os.walk(os.path.join(args.out, d)))]
    if held:  # scenes of another size or seed would mix with these (or with a real dataset)
        raise ValueError("--out %s already holds a Cityscapes-layout dataset (%s); nothing was "
                         "written: give an empty or new folder, or remove that one"
                         % (args.out, ", ".join(d + "/" for d in held)))
    start = time.time()
    counts = make_synthetic_cityscapes(args.out, args.train, args.val, size=args.size,
                                       seed=args.seed, num_test=args.test,
                                       progress=options.progress(args), workers=args.workers)
    print("wrote %d train, %d val, %d test images of %dx%d to %s in %.1f s"
          % (counts["train"], counts["val"], counts["test"], args.size[0], args.size[1],
             args.out, time.time() - start))
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
    print("evaluation report: %s" % result["eval_report"])
    print("run report:      %s" % result["run_report"])
    print("time:            %.0f s" % result["seconds"])
    print("mIoU: %.4f" % result["mean_iou"])
    return 0


def _output_options(p):
    p.add_argument("--out", required=True, metavar="PREFIX",
                   help="output prefix: writes PREFIX.rec, PREFIX.idx and PREFIX.lst (a "
                        "folder DIR/ writes DIR/SPLIT.rec ...)")
    p.add_argument("--encoding", choices=("raw", "jpg"), default="raw",
                   help="image bytes: 'raw' keeps the source file's bytes (lossless, default); "
                        "'jpg' re-encodes (smaller, faster to decode). Labels are always "
                        "lossless PNG.")
    p.add_argument("--quality", type=options.int_in(1, 100), metavar="1..100",
                   help="JPEG quality for --encoding jpg (default 95)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad files and list them at the end, instead of stopping at the "
                        "first one")
    p.add_argument("--workers", type=options.positive_int, default=1,
                   help="processes decoding and checking files (default 1)")
    options.add_progress(p)


def build_data_parser(dsub):
    """The ``data`` subcommands (also what tools/*_to_rec.py run)."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = dsub.add_parser("cityscapes", help="Cityscapes split -> RecordIO",
                        description=_DOCS["cityscapes"], formatter_class=fmt)
    p.add_argument("--root", required=True, help="Cityscapes root (holds leftImg8bit/, gtFine/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test", "train_extra"))
    p.add_argument("--coarse", action="store_true", help="gtCoarse labels (train_extra needs it)")
    _output_options(p)
    p.set_defaults(func=cmd_data, dataset="cityscapes")

    p = dsub.add_parser("voc", help="PASCAL VOC 2012 (+ SBD) -> RecordIO",
                        description=_DOCS["voc"], formatter_class=fmt)
    p.add_argument("--root", "--voc-root", dest="root", required=True, help="VOCdevkit/VOC2012")
    p.add_argument("--sbd-root", help="SBD benchmark_RELEASE/dataset (train_aug; without it, "
                                      "VOC2012/SegmentationClassAug/*.png)")
    p.add_argument("--split", required=True, choices=("train_aug", "train", "val", "trainval"))
    _output_options(p)
    p.set_defaults(func=cmd_data, dataset="voc")

    p = dsub.add_parser("kitti_road", aliases=["kitti-road"], help="KITTI road -> RecordIO",
                        description=_DOCS["kitti_road"], formatter_class=fmt)
    p.add_argument("--root", required=True, help="data_road/")
    p.add_argument("--split", required=True, choices=("train", "test"))
    _output_options(p)
    p.set_defaults(func=cmd_data, dataset="kitti_road")

    p = dsub.add_parser("synthetic", help="synthetic street scenes in the Cityscapes layout",
                        description="Writes OUT/leftImg8bit/<split>/<city>/*_leftImg8bit.png "
                                    "and OUT/gtFine/<split>/<city>/*_gtFine_labelIds.png "
                                    "(official labelIds); scenes are a deterministic function "
                                    "of (--seed, split, index).")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset root to create")
    p.add_argument("--train", type=options.int_in(0, 10 ** 6), default=200, help="training images (default 200)")
    p.add_argument("--val", type=options.int_in(0, 10 ** 6), default=50, help="validation images (default 50)")
    p.add_argument("--test", type=options.int_in(0, 10 ** 6), default=0, help="test images, without labels (default 0)")
    p.add_argument("--size", type=options.size, default=(256, 512), metavar="H,W",
                   help="image size (default 256,512; 1024,2048 is Cityscapes' own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=options.positive_int, default=None,
                   help="rendering processes (default: one per core); the files do not "
                        "depend on it")
    options.add_progress(p)
    p.set_defaults(func=cmd_synthetic)


def register(sub):
    s = sub.add_parser("demo", help="synthetic data -> RecordIO -> train -> evaluate -> predict "
                                    "-> export, on CPU in minutes")
    s.add_argument("--workdir", default="demo_out", help="where everything is written")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the synthetic recipe, e.g. --set train.epochs=8")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("data", help="datasets -> RecordIO (cityscapes, voc, kitti_road), "
                                    "synthetic scenes")
    dsub = s.add_subparsers(dest="data_command", metavar="DATASET")
    dsub.required = True
    build_data_parser(dsub)
