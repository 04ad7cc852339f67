"""The ``duc-hdc`` command: the parser and the one place errors become one line."""
import argparse
import logging
import sys

import duc_hdc  # noqa: F401  (sets up the process before anything imports mxnet)

from . import data_cmds, infer_cmds, model_cmds, run_cmds

log = logging.getLogger("duc_hdc")


def _user_errors():
    """Exceptions that mean bad input or a failed run: one line for the user, no traceback."""
    from ..hub import zoo
    from ..training.trainer import TrainingError

    # ValueError covers ConfigError, ConversionError, SidecarError, DeviceError and the data's
    # bad-sample errors; OSError covers missing files and RecordFileError
    return (ValueError, LookupError, OSError, TrainingError, zoo.DownloadError,
            zoo.WeightsNotAvailableError)


def build_parser():
    p = argparse.ArgumentParser(
        prog="duc-hdc",
        description="DUC-HDC semantic segmentation (Wang et al., WACV 2018) on MXNet/Gluon.")
    p.add_argument("--version", action="version", version=duc_hdc.__version__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (data_cmds, run_cmds, infer_cmds, model_cmds):
        group.register(sub)
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
