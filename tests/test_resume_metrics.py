"""Resume: metrics.jsonl holds every iteration once and the loss curve continues; a refused
resume leaves the run folder as it was (no checkpoint set aside, nothing logged)."""
import json
import os

import pytest

from duc_hdc import cli
from duc_hdc.config import load_config
from duc_hdc.training.trainer import train

from run_helpers import error_line, snapshot, tiny_sets


def rows(run):
    with open(os.path.join(str(run), "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _remove_checkpoints(run, *iterations):
    """As if the run had been killed before writing these checkpoints."""
    for it in iterations:
        for ext in ("params", "states", "json"):
            os.remove(os.path.join(str(run), "checkpoints", "ckpt-%08d.%s" % (it, ext)))


def _fake_validator(net, ctx, progress):
    return dict(pixel_accuracy=0.5, mean_iou=0.25, iou=[0.25])


@pytest.fixture(scope="module")
def straight(tiny_recs, tmp_path_factory):
    """6 iterations (2 epochs of 4, validated after the first) in one go, never changed."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(load_config("synthetic", tiny_sets(tiny_recs, run, "train.epochs=2",
                                             "train.max_iters=6", "train.keep_last=3",
                                             "data.val_rec=%s" % tiny_recs["val"])),
          progress=False, validator=_fake_validator)
    return run


def _interrupted(tiny_recs, straight, tmp_path):
    """The straight run as if killed after logging iteration 6 but before checkpointing 5
    and 6: its newest checkpoint is the end of epoch 1 (iteration 4, validated)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(str(straight), str(run))
    _remove_checkpoints(run, 5, 6)
    os.remove(str(run / "final.params"))
    return run


def test_resume_drops_the_rows_logged_after_its_checkpoint(tiny_recs, straight, tmp_path):
    before = rows(straight)
    assert [r["iteration"] for r in before if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    run = _interrupted(tiny_recs, straight, tmp_path)
    summary = train(None, resume=str(run), overrides=["train.max_iters=6"], progress=False,
                    validator=_fake_validator)
    assert summary["iterations"] == 6
    after = rows(run)
    # every iteration once, in order; the validation of epoch 1 (in the checkpoint) kept once
    assert [r["iteration"] for r in after if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [(r["iteration"], r["epoch"]) for r in after if r["kind"] == "val"] == [(4, 1)]
    assert [r["kind"] for r in after] == [r["kind"] for r in before]
    # the rows up to the checkpoint are the original ones, untouched
    assert after[:5] == before[:5]


def test_resumed_loss_curve_continues_the_running_average(tiny_recs, straight, tmp_path):
    run = _interrupted(tiny_recs, straight, tmp_path)
    train(None, resume=str(run), overrides=["train.max_iters=6"], progress=False,
          validator=_fake_validator)
    losses = {r["iteration"]: r["loss"] for r in rows(straight) if r["kind"] == "train"}
    resumed = {r["iteration"]: r["loss"] for r in rows(run) if r["kind"] == "train"}
    for it in (5, 6):  # the running average restored from the checkpoint, not restarted
        assert resumed[it] == pytest.approx(losses[it], rel=1e-4), (it, resumed, losses)


def test_a_resume_without_metrics_rows_after_its_checkpoint_keeps_the_file(tiny_recs,
                                                                           straight, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(str(straight), str(run))
    before = (run / "metrics.jsonl").read_bytes()
    summary = train(None, resume=str(run), overrides=["train.max_iters=6"], progress=False)
    assert summary["iterations"] == 6  # nothing left to train
    assert (run / "metrics.jsonl").read_bytes() == before


def test_a_refused_resume_changes_nothing_in_the_run_folder(tiny_recs, tmp_path, capsys):
    """A damaged newest checkpoint and a --set that may not change on resume: refused before
    the damaged checkpoint is set aside or anything is written to train.log."""
    run = tmp_path / "run"
    train(load_config("synthetic", tiny_sets(tiny_recs, run, "train.max_iters=4",
                                             "train.keep_last=3", "train.epochs=3")),
          progress=False)
    newest = run / "checkpoints" / "ckpt-00000004.params"
    with open(newest, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 5000)
    before = snapshot(run)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--set", "train.lr=0.5",
                     "--no-progress"]) == 2
    assert "train.lr" in error_line(capsys)
    assert snapshot(run) == before
    # accepted: the damaged checkpoint is set aside then, and the log says so
    assert cli.main(["train", "--resume", str(run), "--set", "train.max_iters=5",
                     "--no-progress"]) == 0
    assert os.path.exists(str(newest) + ".damaged")
    log = (run / "train.log").read_text()
    assert "ckpt-00000004.params" in log and "damaged" in log
    assert "resuming from ckpt-00000003, the newest intact checkpoint" in log
