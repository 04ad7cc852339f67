"""The run folder (``train.out_dir``) as a user has it: a new run never lands in an old one.

A new run refuses a folder that holds a run (:func:`check_new_run_dir`), unless told to
replace it; then, once everything else has been checked, :func:`clear_run` removes the old
run's files (and only those: a user's own files in the folder stay), so no mix of two runs
remains.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile

import yaml

from ..config import RESUME_KEYS, ConfigError, config_differences
from ..fileio import FileLocked, exclusive_lock

#: files a run writes at the top of its folder (checkpoints/ and the report/ folder apart)
RUN_FILES = ("config.yaml", "train.log", "metrics.jsonl", "final.params", "final.json",
             "best.params", "best.json", "curves.png")
_RANK_LOG = re.compile(r"^train\.(rank|pid)\d+\.log$")


def _run_report(run_dir):
    """``run_dir/report`` when it is the run report ``duc-hdc report`` wrote there, else None."""
    folder = os.path.join(run_dir, "report")
    try:
        with open(os.path.join(folder, "report.json")) as f:
            return folder if json.load(f).get("kind") == "run" else None
    except (OSError, ValueError, AttributeError):
        return None


def _is_run_config(path):
    """True when ``path`` is a run's saved recipe (sections ``model`` and ``train``), not some
    other ``config.yaml`` of the user's that happens to sit in the folder."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "model" in doc and "train" in doc


def run_contents(run_dir):
    """What of a training run ``run_dir`` holds (names, ``checkpoints/`` for a non-empty
    checkpoint folder); empty when it holds none (missing, empty, or other files only)."""
    if not os.path.isdir(run_dir):
        return []
    names = sorted(os.listdir(run_dir))
    found = [n for n in names if (n in RUN_FILES or _RANK_LOG.match(n))
             and os.path.isfile(os.path.join(run_dir, n))
             and (n != "config.yaml" or _is_run_config(os.path.join(run_dir, n)))]
    checkpoints = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        found.append("checkpoints/")
    return found


def check_new_run_dir(run_dir, overwrite=False):
    """Refuse, in one line, to start a new run in ``run_dir`` when it holds a run (unless
    ``overwrite``) or is a file. Reads only."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError("train.out_dir %s is a file, not a folder; choose another "
                          "train.out_dir" % run_dir)
    config = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config) and not _is_run_config(config):
        raise ConfigError("train.out_dir %s holds a config.yaml that is not a training run's "
                          "(no model and train sections); a run writes its own config.yaml "
                          "there: choose another train.out_dir (--set train.out_dir=NEW_DIR)"
                          % run_dir)
    found = run_contents(run_dir)
    if not found or overwrite:
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    resumable = os.path.exists(os.path.join(run_dir, "checkpoints", "latest.json"))
    choices = ["choose another train.out_dir (--set train.out_dir=NEW_DIR)",
               "pass --overwrite to delete that run and start a new one there"]
    if resumable:
        choices.insert(0, "continue it with `duc-hdc train --resume %s`" % run_dir)
    raise ConfigError("train.out_dir %s already holds a training run (%s); nothing was changed: "
                      "%s, or %s" % (run_dir, shown, ", ".join(choices[:-1]), choices[-1]))


def clear_run(run_dir):
    """Delete the run in ``run_dir`` (its files, checkpoints and run report; nothing else).

    The checkpoint pointer goes first, the files after it: an interrupted clear leaves a
    folder that is still refused as holding a run, never one a resume would take for whole.
    """
    pointer = os.path.join(run_dir, "checkpoints", "latest.json")
    if os.path.exists(pointer):
        os.remove(pointer)
    for name in run_contents(run_dir):
        path = os.path.join(run_dir, name.rstrip("/"))
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    checkpoints = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(checkpoints) and not os.listdir(checkpoints):
        os.rmdir(checkpoints)
    report = _run_report(run_dir)
    if report:
        shutil.rmtree(report)


# ------------------------------------------------------------------------------ one writer
#: where the run locks live: one file per run folder (named by its real path's hash), outside
#: the folder, so that a new run's folder is not created before its checks pass
LOCK_DIR = os.path.join(tempfile.gettempdir(), "duc-hdc-run-locks")


class RunInUse(ConfigError):
    """Another process trains into the run folder."""


def _lock_file(run_dir):
    real = os.path.realpath(run_dir)
    return os.path.join(LOCK_DIR, hashlib.sha1(real.encode("utf-8")).hexdigest()[:20] + ".lock")


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``run_dir`` for one training process: a second ``train`` (a new run with
    ``--overwrite``, or ``--resume``) into it is refused with :class:`RunInUse` naming the
    holder's pid, instead of deleting or interleaving the live run's files. The lock is the
    kernel's (:func:`duc_hdc.fileio.exclusive_lock`), so a killed holder frees it at once.
    Local processes only: the workers of one distributed job share their folder and do not
    take it."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    try:
        with exclusive_lock(_lock_file(run_dir)):
            yield
    except FileLocked as e:
        raise RunInUse("train.out_dir %s is in use by another training process (pid %s); "
                       "nothing was changed: wait for it to finish or stop it, or choose "
                       "another train.out_dir" % (run_dir, e.pid)) from None


#: a temporary file of :func:`duc_hdc.fileio.temp_path` (``.NAME.tmpPID-THREAD...``)
_TEMP = re.compile(r"^\..+\.tmp\d+-\d+")


def remove_stale_temps(run_dir):
    """Remove what writes a kill stopped left in the run folder and its checkpoints (hidden
    ``.NAME.tmpPID-THREAD`` files, up to a checkpoint's size each). Called with the run lock
    held, so no writer of this run is alive. Returns the removed paths."""
    removed = []
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if _TEMP.match(name) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


def check_checkpoint_of_run(run_dir, stem, saved_config):
    """Refuse to resume from checkpoint ``stem`` when its recipe is not the run's own
    (``run_dir/config.yaml``; the keys a resume may change apart): a checkpoint copied in from
    another run would otherwise be trained on, and the run's config and history replaced; a
    hand edit of config.yaml would be silently reverted."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            own = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # unreadable: the checkpoint's own config is authoritative (it is verified)
    if not isinstance(own, dict):
        return
    differ = config_differences(saved_config, own, skip=RESUME_KEYS + ("train.out_dir",))
    if differ:
        key, theirs, ours = differ[0]
        raise ConfigError(
            "--resume %s: checkpoint %s does not belong to this run's config.yaml: %s is %r in "
            "the checkpoint, %r in config.yaml; nothing was changed. A checkpoint copied from "
            "another run: remove it, or start a new run from its weights (--set "
            "model.init_params=%s.params). config.yaml edited by hand: it is the run's record, "
            "not an input; restore it and give changes with --set, which a resume checks"
            % (run_dir, os.path.basename(stem), key, theirs, ours, stem))
