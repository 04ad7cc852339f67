"""The ``duc-hdc`` command: the parser and the one place errors become one line."""
import argparse
import contextlib
import errno
import logging
import os
import sys

import duc_hdc  # noqa: F401  (sets up the process before anything imports mxnet)

from ..stops import launched_worker, raised_stops
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


def _first_file(path):
    """The first component of ``path`` that exists and is not a folder (None if none is)."""
    heads = []
    head = path
    while head and head not in heads:
        heads.append(head)
        head = os.path.dirname(head)
    for head in reversed(heads):
        if os.path.exists(head) and not os.path.isdir(head):
            return head
    return None


def describe_os_error(e):
    """One sentence for an OSError raised by the OS: the path, what is wrong, what would be
    right (Python's ``[Errno N] text: 'path'`` is for programmers). Errors with their own
    message (no errno) are returned as they are."""
    if not isinstance(e, OSError) or e.errno is None or not e.strerror:
        return str(e)
    two = e.filename2 is not None
    # a rename/copy onto a bad destination is about the destination
    path = e.filename2 if two and e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                                               errno.ENOTEMPTY) else e.filename
    if path is None:
        return "%s%s" % (e.strerror[:1].lower(), e.strerror[1:])
    path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    if e.errno == errno.EISDIR:
        return "%s is a directory; a file was expected here" % path
    if e.errno == errno.ENOTDIR:
        blocker = _first_file(path)
        if blocker is not None and blocker != path:
            return ("%s is a file, not a folder, so %s cannot be created or read; give a path "
                    "whose folders are folders" % (blocker, path))
        return "%s is not a folder; a folder was expected here" % path
    if e.errno == errno.EEXIST:
        if os.path.exists(path) and not os.path.isdir(path):
            return "%s already exists and is a file; a folder path is needed here" % path
        return "%s already exists; choose another path or remove it" % path
    if e.errno == errno.ENOTEMPTY:
        return "%s is a folder that is not empty" % path
    if e.errno == errno.ENOENT:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            missing = parent
            while not os.path.exists(os.path.dirname(missing)):
                missing = os.path.dirname(missing)
            return "%s cannot be used: the folder %s does not exist" % (path, missing)
        if not os.path.lexists(path):
            # a missing input, or an output a special file system (/proc, /sys) refuses
            return "%s does not exist or cannot be created in %s" % (path, parent)
        return "%s cannot be opened (a dangling link?)" % path
    if e.errno in (errno.EACCES, errno.EPERM):
        return "%s: permission denied; choose a path you may read or write" % path
    if e.errno == errno.EROFS:
        return "%s is on a read-only file system; choose a writable path" % path
    if e.errno == errno.ENOSPC:
        return "no space left on the device holding %s" % path
    if e.errno == errno.ENAMETOOLONG:
        return "%s: the file name is too long" % path
    return "%s: %s%s" % (path, e.strerror[:1].lower(), e.strerror[1:])


def _option_of(parser, args, e):
    """``--opt`` whose value the failing path is (or lies under), when the error is about it."""
    paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p)
             for p in (e.filename2, e.filename) if p is not None]
    if not paths:
        return None
    options = {}
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
            elif action.option_strings and action.option_strings[-1].startswith("--"):
                options.setdefault(action.dest, action.option_strings[-1])
    for path in paths:
        full = os.path.abspath(path)
        # the option whose value is the path, else the one whose value is closest to it (the
        # longest that contains it or is contained in it: --root / must not win over --out)
        matches = []
        for dest, value in sorted(vars(args).items()):
            if dest in options and isinstance(value, str) and value:
                given = os.path.abspath(value)
                if full == given:
                    return options[dest]
                if full.startswith(given.rstrip(os.sep) + os.sep) or \
                        given.startswith(full.rstrip(os.sep) + os.sep):
                    matches.append((len(given), options[dest]))
        if matches:
            return max(matches)[1]
    return None


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
        # SIGTERM (timeout, batch schedulers, kill) stops a command as Ctrl-C does: its
        # temporary files go, one line, exit 143 (a distributed worker is its launcher's to stop)
        with (contextlib.nullcontext() if launched_worker() else raised_stops()):
            return args.func(args)
    except _user_errors() as e:
        # one clear line, no traceback (-v shows it)
        if args.verbose:
            raise
        message = str(e)
        if isinstance(e, OSError) and e.errno is not None and e.strerror:
            message = describe_os_error(e)
            option = _option_of(parser, args, e)
            if option is not None:
                message = "%s: %s" % (option, message)
        print("error: %s" % message, file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: one line (what to do next, where known), not a
        if args.verbose:            # traceback of wherever the main thread was
            raise
        print("interrupted%s" % (": %s" % e if str(e) else ""), file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
