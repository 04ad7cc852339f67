"""Shared bits of the converter command lines (not a public module)."""
import argparse
import logging
import os
import sys

# runnable as `python tools/x.py` from a checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_output_args(parser):
    """--out, --encoding, --quality, --skip-bad, --workers."""
    parser.add_argument("--out", required=True, metavar="PREFIX",
                        help="output prefix: writes PREFIX.rec, PREFIX.idx and PREFIX.lst")
    parser.add_argument("--encoding", choices=("raw", "jpg"), default="raw",
                        help="image bytes: 'raw' keeps the source file's bytes as they are "
                             "(lossless, default); 'jpg' re-encodes (smaller, faster to decode)."
                             " Labels are always lossless PNG.")
    parser.add_argument("--quality", type=int, default=95,
                        help="JPEG quality for --encoding jpg (default 95)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip bad files and list them at the end, instead of stopping at "
                             "the first one")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes decoding and checking files (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_conversion(convert, *args, **kwargs):
    """Run a duc_hdc.data.datasets.convert_* function; print the summary; return an exit code."""
    from duc_hdc.data.recordio import BadSampleError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        report = convert(*args, **kwargs)
    except (BadSampleError, ValueError) as err:
        print("error: %s" % err, file=sys.stderr)
        if isinstance(err, BadSampleError):
            print("nothing was written (use --skip-bad to convert the other files)",
                  file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print("wrote %d records to %s.rec (%.1f MiB) in %.1f s; index %s.idx, list %s.lst"
          % (report.written, report.prefix, report.rec_bytes / 2.0 ** 20, report.seconds,
             report.prefix, report.prefix))
    if report.skipped:
        print("skipped %d bad files:" % len(report.skipped))
        for path, reason in report.skipped:
            print("  %s: %s" % (path, reason))
    return 0


def conversion_kwargs(args):
    return dict(encoding=args.encoding, quality=args.quality, skip_bad=args.skip_bad,
                num_workers=args.workers, progress=not args.quiet)


def parser(description):
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
