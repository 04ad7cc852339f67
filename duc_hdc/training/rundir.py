"""The run folder (``train.out_dir``) as a user has it: a new run never lands in an old one.

A new run refuses a folder that holds a run (:func:`check_new_run_dir`), unless told to
replace it; then, once everything else has been checked, :func:`clear_run` removes the old
run's files (and only those: a user's own files in the folder stay), so no mix of two runs
remains.
"""
import json
import os
import re
import shutil

import yaml

from ..config import ConfigError

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
