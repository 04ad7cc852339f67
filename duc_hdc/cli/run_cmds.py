"""Commands that train: train, launch."""
import argparse
import shlex
import signal
import sys

import duc_hdc

from ..config import KVSTORES, RESUME_KEYS
from ..stops import Stopped
from . import options


def _train_overrides(args):
    """``train``'s ``--set`` values with ``--kvstore`` and ``--fp16`` added as overrides."""
    overrides = list(args.set or [])
    if args.kvstore:
        given = [text.split("=", 1)[1].strip() for text in overrides
                 if text.split("=", 1)[0].strip() == "train.kvstore" and "=" in text]
        if given and given[-1] != args.kvstore:
            raise ValueError("--kvstore %s and --set train.kvstore=%s say two things; give one"
                             % (args.kvstore, given[-1]))
        overrides.append("train.kvstore=%s" % args.kvstore)
    if args.fp16:
        overrides.append("train.amp=float16")  # AMP on GPUs; checked against the devices
    return overrides


def cmd_train(args):
    from ..config import load_config

    overrides = _train_overrides(args)
    if args.config is None and not args.resume:
        raise ValueError("train: give --config RECIPE (or --resume RUN_DIR)")
    ctx = options.devices(args, cpu_devices=args.cpu_devices)
    # the run's saved config is authoritative with --resume alone (--set may change only what
    # extends the run); a whole recipe with --resume is compared key by key with the saved one
    cfg = None if args.resume and args.config is None else load_config(args.config, overrides)
    run_dir = args.resume or cfg["train"]["out_dir"]
    try:
        summary = duc_hdc.train(cfg, ctx=ctx, resume=args.resume,
                                overrides=overrides if cfg is None else None,
                                progress=options.progress(args), overwrite=args.overwrite)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        raise Stopped(signum, "training of %s stopped%s; `duc-hdc train --resume %s` continues "
                      "it from its last checkpoint (if it wrote one)"
                      % (run_dir, "" if signum == signal.SIGINT else
                         " (%s)" % signal.Signals(signum).name, run_dir)) from None
    if summary.get("rank", 0) != 0:  # a worker of a launched job: rank 0 writes final.params
        print("worker %d of %d done (%d iterations)" % (summary["rank"], summary["num_workers"],
                                                        summary["iterations"]))
        return 0
    best = summary["best"]
    print("trained %d iterations; final parameters %s" % (summary["iterations"],
                                                          summary["final"]))
    if best:
        print("best val mIoU %.4f (epoch %d)" % (best["mean_iou"], best["epoch"]))
    return 0


def _worker_kvstore(command):
    """The ``train.kvstore`` a ``duc-hdc train`` worker command trains with; None when the
    command is something else or its recipe cannot be read here (the workers then decide)."""
    import contextlib
    import io
    import os

    from ..config import load_config

    if command[1:3] == ["-m", "duc_hdc.cli"]:
        argv = command[3:]
    elif os.path.basename(command[0]) == "duc-hdc":
        argv = command[1:]
    else:
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # this module's own commands (not cli.main's parser: main imports this module)
            parser = argparse.ArgumentParser(prog="duc-hdc")
            register(parser.add_subparsers(dest="command"))
            args = parser.parse_args(argv)
    except SystemExit:  # not a valid command line: the workers say so
        return None
    if getattr(args, "func", None) is not cmd_train:
        return None
    if args.kvstore:  # an unknown name: the workers say so
        return args.kvstore if args.kvstore in KVSTORES else None
    try:
        if args.config is not None:
            return load_config(args.config, _train_overrides(args))["train"]["kvstore"]
        if args.resume:  # the run's saved recipe
            return load_config(os.path.join(args.resume, "config.yaml"))["train"]["kvstore"]
    except (ValueError, LookupError, OSError):  # the workers report it
        return None
    return None


def cmd_launch(args):
    from ..training.distributed import DIST_KVSTORES, launch

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if command and command[0] == "duc-hdc":
        # the same interpreter and package as the launcher, wherever it is installed
        command = [sys.executable, "-m", "duc_hdc.cli"] + command[1:]
    if not command:
        raise ValueError("launch: give the worker command after --, e.g. -- duc-hdc train "
                         "--config synthetic --kvstore dist_sync")
    kvstore = _worker_kvstore(command)
    if kvstore is not None and kvstore not in DIST_KVSTORES:
        # every worker would train the whole recipe alone, into the same run folder
        raise ValueError("launch: the workers would train with train.kvstore=%s, one process "
                         "each; give the train command --kvstore %s (one job over the "
                         "workers), or run duc-hdc train without launch"
                         % (kvstore, "|".join(DIST_KVSTORES)))
    ssh_options = [part for opt in (args.ssh_option or []) for part in shlex.split(opt)]
    return launch(command, args.num_workers, args.num_servers, launcher=args.launcher,
                  hostfile=args.hostfile, timeout=args.timeout, grace=args.grace,
                  ssh_options=ssh_options, host_ip=args.host_ip)


def cmd_report(args):
    from ..evaluation.report import write_run_report

    print(write_run_report(args.run_dir, out_dir=args.out, eval_report=args.eval_report))
    return 0


def register(sub):
    s = sub.add_parser("train", help="train a recipe on one or more devices",
                       description="Train from a YAML recipe (packaged name or path).")
    s.add_argument("--config", metavar="RECIPE",
                   help="recipe name or YAML path (with --resume: optional, compared with the "
                        "run's saved recipe)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.lr=0.01 (repeatable)")
    options.add_devices(s, multi=True)
    s.add_argument("--cpu-devices", type=options.positive_int, default=1,
                   help="CPU contexts to split each batch over (exercises multi-device code)")
    s.add_argument("--kvstore", choices=KVSTORES,
                   help="local, device, dist_sync, dist_device_sync, dist_async (same as --set "
                        "train.kvstore=...)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly, under its saved recipe; --set "
                        "may change only %s" % ", ".join(RESUME_KEYS))
    s.add_argument("--overwrite", action="store_true",
                   help="train.out_dir holds a run: delete it (config.yaml, logs, metrics, "
                        "weights, curves.png, the checkpoints/ and report/ folders; other files "
                        "stay) and start a new one there. Without it such a folder is refused")
    options.add_progress(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("report", help="HTML report of a training run (RUN_DIR/report/index.html)",
                       description="Loss and learning-rate curves per iteration, validation mIoU, "
                                   "checkpoints with their sha256, the resolved config and a "
                                   "link to the newest evaluation report of the run's weights.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--out", metavar="DIR", help="report folder (default RUN_DIR/report)")
    s.add_argument("--eval-report", metavar="INDEX_HTML",
                   help="evaluation report to link (default: the newest one of the run's "
                        "weights, found by sha256)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("launch", help="start a parameter-server job (dist_sync, dist_device_sync, "
                                      "dist_async): scheduler, servers, workers",
                       description="Run COMMAND as the workers of a parameter-server job, e.g. "
                                   "duc-hdc launch -n 2 -s 1 -- duc-hdc train --config "
                                   "cityscapes --kvstore dist_sync")
    s.add_argument("-n", "--num-workers", type=options.positive_int, required=True)
    s.add_argument("-s", "--num-servers", type=options.positive_int, default=1)
    s.add_argument("--launcher", choices=("local", "ssh", "mpi"),
                   help="how processes start (default: ssh with --hostfile, else local)")
    s.add_argument("--hostfile", help="hosts for servers and workers, dmlc_tracker's format: "
                                      "host, host:port (ssh port) or host slots=N")
    s.add_argument("--ssh-option", action="append", metavar="ARG",
                   help='extra ssh arguments, e.g. --ssh-option "-i ~/.ssh/job_key" (repeatable)')
    s.add_argument("--host-ip", metavar="ADDR",
                   help="the scheduler's address as the other hosts reach it (default: this "
                        "machine's, from dmlc_tracker)")
    s.add_argument("--timeout", type=options.positive_float,
                   help="stop the job after this many seconds")
    s.add_argument("--grace", type=options.non_negative_float, default=5.0,
                   help="seconds a stopped job's processes get before SIGKILL (default 5)")
    s.add_argument("command", nargs=argparse.REMAINDER, help="-- then the worker command")
    s.set_defaults(func=cmd_launch)
