"""The run folder (train.out_dir) a user has: never silently replaced, never half-created.

A new run refuses a folder that holds a run (one line: resume it, choose another folder, or
--overwrite, which starts it clean); a refused command leaves the file system as it was; a
finished run always has its metrics.jsonl, and ``report`` works on a run without one.
"""
import json
import os

import pytest

from duc_hdc import cli
from duc_hdc.config import ConfigError, load_config
from duc_hdc.training.trainer import Checkpointer, train

from run_helpers import error_line, snapshot, tiny_sets


def cli_train(recs, out_dir, *extra, args=()):
    command = ["train", "--config", "synthetic", "--cpu", "--no-progress"] + list(args)
    for kv in tiny_sets(recs, out_dir, *extra):
        command += ["--set", kv]
    return cli.main(command)


def train_rows(run):
    with open(os.path.join(str(run), "metrics.jsonl")) as f:
        return [r["iteration"] for r in map(json.loads, f) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def finished(tiny_recs, tmp_path_factory):
    """A finished tiny run (4 iterations, validated, best/final, keep_last 2), never changed:
    tests copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(load_config("synthetic", tiny_sets(tiny_recs, run, "data.val_rec=%s" % tiny_recs["val"],
                                             "train.keep_last=2", "train.max_iters=4")),
          progress=False, validator=lambda net, ctx, progress: dict(
              pixel_accuracy=0.5, mean_iou=0.25, iou=[0.25]))
    return run


def copy_run(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(str(finished), str(run))
    return run


# ------------------------------------------------------------- bug 1: an existing run
def test_train_into_a_finished_run_is_refused_and_changes_nothing(tiny_recs, finished, tmp_path,
                                                                  capsys):
    run = copy_run(finished, tmp_path)
    assert {"config.yaml", "final.params", "best.params", "metrics.jsonl"} <= set(os.listdir(run))
    before = snapshot(run)
    capsys.readouterr()
    assert cli_train(tiny_recs, run, "train.max_iters=2") == 2
    line = error_line(capsys)
    assert str(run) in line and "--resume %s" % run in line and "--overwrite" in line
    assert "train.out_dir" in line
    assert snapshot(run) == before
    # the API says the same
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(load_config("synthetic", tiny_sets(tiny_recs, run)), progress=False)
    assert snapshot(run) == before


def test_a_run_without_checkpoint_is_refused_without_suggesting_resume(tiny_recs, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    run.mkdir()
    # a run killed before its first checkpoint: its saved recipe only
    (run / "config.yaml").write_text("model: {name: duc_hdc_resnet18}\ntrain: {lr: 0.01}\n")
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    capsys.readouterr()
    assert cli_train(tiny_recs, run, "train.max_iters=1") == 2
    line = error_line(capsys)
    assert str(run) in line and "--overwrite" in line and "--resume" not in line
    assert snapshot(run) == before
    # a config.yaml that is no run's (the user's own) is neither taken for a run nor written
    # over, even with --overwrite
    (run / "config.yaml").write_text("name: my own settings\n")
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        assert cli_train(tiny_recs, run, "train.max_iters=1", args=extra) == 2
        assert "not a training run's" in error_line(capsys)
        assert snapshot(run) == before
    # a folder holding other files only is no run: a new run starts there, keeping them
    (run / "config.yaml").unlink()
    assert cli_train(tiny_recs, run, "train.max_iters=1") == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "final.params").exists()


def test_overwrite_starts_the_run_clean(tiny_recs, finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "train.rank1.log").write_text("worker 1 of the old run\n")
    (run / "report").mkdir()
    (run / "report" / "report.json").write_text('{"kind": "run"}')
    (run / "notes.txt").write_text("mine")
    with open(run / "train.log", "a") as f:
        f.write("a line of the old run's log\n")
    assert cli_train(tiny_recs, run, "train.max_iters=2", args=["--overwrite"]) == 0
    names = set(os.listdir(run))
    # nothing of the old run is left: no best.params (no validation now), no old rows or logs
    assert "best.params" not in names and "best.json" not in names
    assert "train.rank1.log" not in names and "report" not in names
    assert (run / "notes.txt").read_text() == "mine"  # not the run's: kept
    assert train_rows(run) == [1, 2]
    assert "old run" not in (run / "train.log").read_text()
    assert load_config(str(run / "config.yaml"))["train"]["max_iters"] == 2
    ckpts = sorted(f for f in os.listdir(run / "checkpoints") if f.endswith(".params"))
    assert ckpts == ["ckpt-00000001.params", "ckpt-00000002.params"]  # keep_last 2, new ones
    latest = Checkpointer(str(run)).latest()
    assert os.path.exists(latest + ".params") and latest.endswith("ckpt-00000002")


def test_overwrite_with_resume_or_a_refused_recipe_changes_nothing(tiny_recs, finished, tmp_path,
                                                                   capsys):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--overwrite", "--no-progress"]) == 2
    assert "--overwrite" in error_line(capsys)
    # validated before the old run is touched: its config.yaml is not rewritten
    assert cli_train(tiny_recs, run, "model.dilations=foo", args=["--overwrite"]) == 2
    assert "foo" in error_line(capsys)
    assert cli_train(tiny_recs, run, "model.init_params=%s" % (tmp_path / "no.params"),
                     args=["--overwrite"]) == 2
    assert "no.params" in error_line(capsys)
    assert snapshot(run) == before


def test_demo_starts_over_a_run_folder_that_has_no_checkpoint(tiny_recs, tmp_path):
    """The demo resumes its run from a checkpoint and skips it when final.params exists; a run
    folder of its own with neither (killed before the first checkpoint) starts over clean."""
    import mxnet as mx

    from duc_hdc.demo import pipeline

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: duc_hdc_resnet18}\ntrain: {lr: 0.01}\n")
    (run / "metrics.jsonl").write_text('{"kind": "train", "iteration": 99, "loss": 1.0}\n')
    sets = [s for s in tiny_sets(tiny_recs, run, "train.max_iters=2")
            if not s.startswith(("data.train_rec=", "data.val_rec=", "train.out_dir="))]
    recs = dict(train=tiny_recs["train"], val=tiny_recs["val"])
    final = pipeline._train(str(tmp_path), recs, [mx.cpu()], sets + ["data.val_rec=null"])
    assert final == str(run / "final.params") and os.path.exists(final)
    assert train_rows(run) == [1, 2]
    before = snapshot(run)
    assert pipeline._train(str(tmp_path), recs, [mx.cpu()], sets) == final  # done: skipped
    assert snapshot(run) == before


# -------------------------------------------------- bug 2: refused commands create nothing
@pytest.mark.parametrize("extra,args,says", [
    (("data.train_rec=/nonexistent/train.rec",), (), "/nonexistent/train.rec"),
    (("data.val_rec=/nonexistent/val.rec",), (), "/nonexistent/val.rec"),
    (("model.dilations=foo",), (), "foo"),
    (("model.init_params=/nonexistent/init.params",), (), "/nonexistent/init.params"),
    ((), ("--kvstore", "dist_sync"), "duc-hdc launch"),
    (("train.amp=float16",), (), "train.amp"),
])
def test_a_refused_train_creates_nothing(tiny_recs, tmp_path, capsys, monkeypatch, extra, args,
                                         says):
    for key in ("DMLC_ROLE", "DMLC_NUM_WORKER", "DMLC_PS_ROOT_URI"):
        monkeypatch.delenv(key, raising=False)
    new = tmp_path / "new" / "run"
    capsys.readouterr()
    assert cli_train(tiny_recs, new, *extra, args=args) == 2
    assert says in error_line(capsys)
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_train(tiny_recs, empty, *extra, args=args) == 2
    assert os.listdir(empty) == []


def test_resume_of_a_missing_folder_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(missing), "--no-progress"]) == 2
    assert str(missing) in error_line(capsys)
    assert not missing.exists()


# ------------------------------------------ bug 3: metrics.jsonl of a short run, the report
def test_a_run_shorter_than_the_log_interval_logs_its_last_iteration(tiny_recs, tmp_path):
    run = tmp_path / "run"
    summary = train(load_config("synthetic", tiny_sets(tiny_recs, run, "train.max_iters=3",
                                                       "train.log_every_iters=5")),
                    progress=False)
    assert summary["iterations"] == 3
    assert train_rows(run) == [3]
    assert os.path.getsize(run / "curves.png") > 1000
    # and a run whose last iteration falls on the interval logs it once
    other = tmp_path / "other"
    train(load_config("synthetic", tiny_sets(tiny_recs, other, "train.max_iters=4",
                                             "train.log_every_iters=2")), progress=False)
    assert train_rows(other) == [2, 4]


def test_report_of_a_run_without_metrics_says_no_iterations_were_logged(finished, tmp_path,
                                                                        capsys):
    run = copy_run(finished, tmp_path)
    os.remove(run / "metrics.jsonl")  # e.g. written by an older duc-hdc, or killed early
    assert cli.main(["report", str(run)]) == 0
    index = run / "report" / "index.html"
    page = index.read_text()
    assert "no logged iterations" in page.lower()
    assert "final.params" in page and "ckpt-00000004.params" in page
    # a folder that holds no run at all is still refused in one line
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "metrics.jsonl" in error_line(capsys)


# ------------------------------------------------------ a parameter-server job's shared folder
@pytest.mark.slow
def test_a_launched_job_refuses_a_finished_run_and_overwrites_it_clean(tiny_recs, tmp_path,
                                                                       capfd):
    """Every worker checks the shared folder before any of them writes: a fresh job runs; the
    same job again is refused (nothing changed); with --overwrite it starts clean."""
    from duc_hdc.training.distributed import launch
    from test_distributed import ENV, train_command

    run = tmp_path / "run"
    command = train_command(tiny_recs, run, "dist_sync", "train.max_iters=2",
                            "train.checkpoint_every_iters=1")
    assert launch(command, 2, 1, timeout=120, env=ENV) == 0, "".join(capfd.readouterr())[-3000:]
    assert train_rows(run) == [1, 2] and (run / "train.rank1.log").exists()
    before = snapshot(run)
    capfd.readouterr()
    assert launch(command, 2, 1, timeout=120, env=ENV) != 0
    err = capfd.readouterr().err
    assert "error: train.out_dir %s already holds a training run" % run in err, err[-3000:]
    assert snapshot(run) == before
    assert launch(command + ["--overwrite"], 2, 1, timeout=120, env=ENV) == 0, \
        "".join(capfd.readouterr())[-3000:]
    assert train_rows(run) == [1, 2]
    ckpts = sorted(f for f in os.listdir(run / "checkpoints") if f.endswith(".params"))
    assert ckpts == ["ckpt-00000001.params", "ckpt-00000002.params"]
    assert (run / "train.rank1.log").exists()  # the new job's worker 1 log, kept
    assert "deleting the run" in (run / "train.log").read_text()
