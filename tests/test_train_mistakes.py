"""A new user's training mistakes: fine-tuning from weights of another shape, a run folder in use
by another process, a checkpoint from another run, leftovers of stopped writes."""
import json
import os
import shutil
import signal

import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc import cli, train
from duc_hdc.config import ConfigError

from run_helpers import error_line, snapshot
from test_run_folder import cli_train
from test_train import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_recs, tmp_path_factory):
    """One iteration of the tiny recipe (the synthetic recipe's 19 classes, width 4): its
    final.params."""
    out = tmp_path_factory.mktemp("trained") / "run"
    summary = train(tiny_config(tiny_recs, str(out), "train.max_iters=1", "data.val_rec=null"),
                    progress=False)
    return summary["final"]


def _arrays(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


# ------------------------------------------------------------------------------ model.init_params
def test_fine_tuning_to_other_classes_keeps_the_backbone_and_starts_a_new_head(
        tiny_recs, trained, tmp_path, caplog):
    cfg = tiny_config(tiny_recs, str(tmp_path / "ft"), "train.max_iters=1", "data.val_rec=null",
                      "model.classes=5", "model.init_params=%s" % trained, "train.lr=1e-9")
    with caplog.at_level("WARNING"):
        summary = train(cfg, progress=False)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "model.init_params" in warned and "head" in warned and "classes" in warned, warned
    source, tuned = _arrays(trained), _arrays(summary["final"])
    backbone = [k for k in source if k.startswith("backbone.") and "running" not in k]
    assert backbone and all(np.allclose(source[k], tuned[k], rtol=1e-5, atol=1e-7)
                            for k in backbone)  # one step at lr 1e-9
    heads = [k for k in tuned if k.startswith("head.") and k.endswith("weight")]
    assert heads and all(tuned[k].shape != source[k].shape for k in heads)
    assert duc_hdc.load(summary["final"]).classes == 5


def test_init_params_of_another_width_is_one_line_naming_the_shapes(tiny_recs, trained,
                                                                     tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "w"), "train.max_iters=1", "data.val_rec=null",
                      "model.base_width=8", "model.init_params=%s" % trained)
    with pytest.raises(ConfigError) as e:
        train(cfg, progress=False)
    message = str(e.value)
    assert message.startswith("model.init_params: %s" % trained) and "\n" not in message
    assert "backbone." in message and "(4, 3, 3, 3)" in message and "(8, 3, 3, 3)" in message


@pytest.mark.parametrize("damage", ["truncated", "folder"])
def test_a_damaged_init_params_is_one_line_without_mxnet_text(tiny_recs, trained, tmp_path,
                                                               damage):
    if damage == "truncated":
        bad = str(tmp_path / "cut.params")
        data = open(trained, "rb").read()
        open(bad, "wb").write(data[:len(data) // 3])
    else:
        bad = str(tmp_path)
    cfg = tiny_config(tiny_recs, str(tmp_path / "d"), "train.max_iters=1", "data.val_rec=null",
                      "model.init_params=%s" % bad)
    with pytest.raises(ConfigError) as e:
        train(cfg, progress=False)
    message = str(e.value)
    assert "Traceback" not in message and bad in message and "\n" not in message
    assert ("truncated" in message) if damage == "truncated" else ("folder" in message)


# ------------------------------------------------------------------------------ one run, one writer
HOLD = r"""
import sys, time
from duc_hdc.training.rundir import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_folder_in_use_is_refused_and_left_alone(tiny_recs, tmp_path, capsys):
    import subprocess
    import sys

    run = tmp_path / "busy"
    assert cli_train(tiny_recs, run, "train.max_iters=1") == 0
    before = snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        for resume in (False, True):
            rc = (cli.main(["train", "--cpu", "--no-progress", "--resume", str(run), "--set",
                            "train.max_iters=3"]) if resume
                  else cli_train(tiny_recs, run, "train.max_iters=1", args=["--overwrite"]))
            assert rc == 2
            line = error_line(capsys)
            assert str(run) in line and "pid %d" % holder.pid in line, line
            assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder gone (even killed), the folder is free again
    assert cli_train(tiny_recs, run, "train.max_iters=1", args=["--overwrite"]) == 0


# ------------------------------------------------------------------------------ stops
class _InterruptInDel(object):
    """Sends SIGINT to this process from inside ``__del__``, where Python's default handler's
    KeyboardInterrupt is swallowed ("Exception ignored in ..."), as it is when Ctrl-C lands in
    MXNet's ``NDArrayBase.__del__`` during gluon DataLoader's ``gc.collect()``."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):  # the handler runs between these bytecodes, inside __del__
            pass


def test_ctrl_c_inside_a_finalizer_still_stops_training(tiny_recs, tmp_path, monkeypatch):
    from duc_hdc.data import loader as loader_mod

    original = loader_mod.build_train_loader
    calls = []

    def build(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second epoch's loader
            _InterruptInDel()  # collected at once: its __del__ runs here
        return original(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "build_train_loader", build)
    run = tmp_path / "int"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_recs, str(run), "train.epochs=4", "data.val_rec=null"),
              progress=False)
    assert len(calls) == 2  # stopped in the second epoch, not after the fourth
    assert not os.path.exists(run / "final.params")


def test_sigterm_stops_training_with_the_resume_line_and_status_143(tiny_recs, tmp_path, capsys,
                                                                     monkeypatch):
    from duc_hdc.training import trainer as trainer_mod

    original = trainer_mod._checkpoint

    def checkpoint(run, state, last):
        stem = original(run, state, last)
        if state["iteration"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return stem

    monkeypatch.setattr(trainer_mod, "_checkpoint", checkpoint)

    def unhandled(signum, frame):  # what the default action (death) would be, testably
        raise AssertionError("SIGTERM reached the process's own handler, not training's")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        run = tmp_path / "term"
        assert cli_train(tiny_recs, run, "train.max_iters=6") == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume %s" % run in err and "SIGTERM" in err, err
    latest = json.load(open(run / "checkpoints" / "latest.json"))["checkpoint"]
    assert latest.endswith("ckpt-00000002")


def test_a_resume_removes_the_leftovers_of_writes_a_kill_stopped(tiny_recs, tmp_path):
    run = tmp_path / "left"
    assert cli_train(tiny_recs, run, "train.max_iters=2") == 0
    stale = [run / "checkpoints" / ".ckpt-00000003.states.tmp99999-1",
             run / ".final.params.tmp99999-2"]
    for path in stale:
        path.write_bytes(b"x" * 100)
    keep = run / "checkpoints" / "notes.txt"
    keep.write_text("mine")
    assert cli.main(["train", "--cpu", "--no-progress", "--resume", str(run), "--set",
                     "train.max_iters=3"]) == 0
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"


def _refused_resume(run, capsys, *sets):
    """``train --resume run --set ...`` refused in one line (returned), the folder unchanged."""
    before = snapshot(run)
    capsys.readouterr()
    command = ["train", "--cpu", "--no-progress", "--resume", str(run)]
    for text in sets:
        command += ["--set", text]
    assert cli.main(command) == 2
    line = error_line(capsys)
    assert snapshot(run) == before
    return line


def test_resuming_to_fewer_iterations_than_trained_changes_nothing(tiny_recs, tmp_path, capsys):
    run = tmp_path / "done"
    assert cli_train(tiny_recs, run, "train.max_iters=3") == 0
    line = _refused_resume(run, capsys, "train.max_iters=2")
    assert "iteration 3" in line and "train.max_iters" in line, line


def test_a_checkpoint_of_another_run_is_refused(tiny_recs, tmp_path, capsys):
    ours, other = tmp_path / "ours", tmp_path / "other"
    assert cli_train(tiny_recs, ours, "train.max_iters=2") == 0
    assert cli_train(tiny_recs, other, "train.max_iters=3", "model.base_width=8") == 0
    for name in os.listdir(other / "checkpoints"):
        if name.startswith("ckpt-00000003"):
            shutil.copy(other / "checkpoints" / name, ours / "checkpoints" / name)
    (ours / "checkpoints" / "latest.json").write_text(json.dumps(
        dict(checkpoint=str(ours / "checkpoints" / "ckpt-00000003"))))
    line = _refused_resume(ours, capsys, "train.max_iters=4")
    assert "ckpt-00000003" in line and "model.base_width" in line and "config.yaml" in line, line


# ------------------------------------------------------------------------------ data paths
def test_a_run_saves_its_data_paths_absolute_and_resumes_from_any_folder(tiny_recs, tmp_path,
                                                                           monkeypatch):
    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    for ext in (".rec", ".idx"):
        shutil.copy(tiny_recs["train"][:-4] + ext, data / ("train" + ext))
    monkeypatch.chdir(tmp_path / "project")
    run = tmp_path / "project" / "runs" / "r"
    assert cli_train(dict(train="data/train.rec"), "runs/r", "train.max_iters=1") == 0
    saved = json.loads(json.dumps(__import__("yaml").safe_load(open(run / "config.yaml"))))
    assert saved["data"]["train_rec"] == str(data / "train.rec")
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved absolute paths still lead to the data
    assert cli.main(["train", "--cpu", "--no-progress", "--resume", str(run), "--set",
                     "train.max_iters=2"]) == 0


def test_a_missing_data_file_names_its_recipe_key(tiny_recs, tmp_path, capsys):
    assert cli_train(dict(train=str(tmp_path / "trian.rec")), tmp_path / "r",
                     "train.max_iters=1") == 2
    line = error_line(capsys)
    assert "data.train_rec" in line and "trian.rec" in line, line


def test_a_hand_edited_run_config_is_not_silently_reverted(tiny_recs, tmp_path, capsys):
    import yaml

    run = tmp_path / "edited"
    assert cli_train(tiny_recs, run, "train.max_iters=2") == 0
    doc = yaml.safe_load(open(run / "config.yaml"))
    doc["train"]["lr"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    line = _refused_resume(run, capsys, "train.max_iters=3")
    assert "train.lr" in line and "0.5" in line and "--set" in line, line


def test_resume_given_a_checkpoint_file_says_what_resume_takes(tiny_recs, tmp_path, capsys):
    run = tmp_path / "r"
    assert cli_train(tiny_recs, run, "train.max_iters=1") == 0
    ckpt = str(run / "checkpoints" / "ckpt-00000001.params")
    capsys.readouterr()
    assert cli.main(["train", "--cpu", "--no-progress", "--resume", ckpt]) == 2
    line = error_line(capsys)
    assert "is a file" in line and "model.init_params=%s" % ckpt in line, line


@pytest.mark.parametrize("key", ["train.out_dir", "data.train_rec", "model.init_params"])
def test_an_empty_path_in_a_recipe_is_named(tiny_recs, tmp_path, capsys, key):
    sets = {"train.out_dir": "", "data.train_rec": "", "model.init_params": ""}
    command = ["train", "--config", "synthetic", "--cpu", "--no-progress"]
    for k, v in (("train.out_dir", str(tmp_path / "r")), ("data.train_rec", tiny_recs["train"])):
        command += ["--set", "%s=%s" % (k, v)]
    command += ["--set", "%s=%s" % (key, sets[key])]
    assert cli.main(command) == 2
    line = error_line(capsys)
    assert "%s is empty" % key in line and "--set %s=" % key in line, line


def test_kvstore_option_and_set_that_disagree_are_refused(tiny_recs, tmp_path, capsys):
    assert cli_train(tiny_recs, tmp_path / "r", "train.kvstore=device",
                     args=["--kvstore", "local"]) == 2
    line = error_line(capsys)
    assert "--kvstore local" in line and "train.kvstore=device" in line, line
    with pytest.raises(SystemExit):
        cli_train(tiny_recs, tmp_path / "r", args=["--kvstore", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_resume_that_stretches_the_schedule_says_what_the_learning_rate_does(tiny_recs,
                                                                                tmp_path,
                                                                                caplog):
    run = tmp_path / "poly"
    assert cli_train(tiny_recs, run, "train.max_iters=2", "train.lr_schedule=poly",
                     "train.epochs=2") == 0
    with caplog.at_level("WARNING"):
        assert cli.main(["train", "--cpu", "--no-progress", "--resume", str(run), "--set",
                         "train.epochs=8", "--set", "train.max_iters=3"]) == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "train.epochs 2 -> 8" in warned and "iteration 2" in warned, warned
