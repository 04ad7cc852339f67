"""Training: multi-device replicas, exact resume, schedules, config errors, non-finite loss."""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from duc_hdc.config import ConfigError, apply_overrides, load_config, validate
import duc_hdc
from duc_hdc import train
from duc_hdc.models.sidecar import sidecar_path
from duc_hdc.training.trainer import (Checkpointer, SegmentationLoss, TrainingError, learning_rate,
                                      params_checksum)


def tiny_config(recs, out_dir, *extra):
    overrides = [
        "data.train_rec=%s" % recs["train"], "data.val_rec=%s" % recs["val"],
        "train.out_dir=%s" % out_dir, "data.crop_size=[48,96]", "data.scales=[1.0]",
        "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1,2]",
        "train.batch_size_per_device=2", "train.epochs=1", "train.optimizer=sgd",
        "train.lr=0.01", "train.warmup_iters=0", "train.lr_schedule=constant",
        "train.checkpoint_every_iters=1", "train.log_every_iters=1",
        "train.val_every_epochs=1",
    ]
    return load_config("synthetic", overrides + list(extra))


def test_two_devices_keep_identical_replicas(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.kvstore=device",
                      "train.max_iters=2", "data.val_rec=null")
    summary = train(cfg, ctx=[mx.cpu(0), mx.cpu(1)], progress=False)
    assert summary["iterations"] == 2
    net = duc_hdc.load(summary["final"])
    assert params_checksum(net) == summary["checksum"]
    # the saved parameters moved away from the initialization and are finite
    rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_replicas_identical_on_both_contexts(tiny_recs, tmp_path):
    from duc_hdc.training import trainer as train_mod

    captured = {}
    original = train_mod.params_checksum

    def capture(net, **kwargs):
        # every array, BatchNorm statistics too: they are synced to the saved mean at the end
        for name, p in net._collect_params_with_prefix().items():
            a, b = (p.data(c).asnumpy() for c in p.list_ctx())
            captured[name] = float(np.abs(a - b).max())
        return original(net, **kwargs)

    train_mod.params_checksum = capture
    try:
        cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.kvstore=device",
                          "train.max_iters=3", "data.val_rec=null")
        train(cfg, ctx=[mx.cpu(0), mx.cpu(1)], progress=False)
    finally:
        train_mod.params_checksum = original
    assert captured and max(captured.values()) == 0.0


def test_resume_continues_exactly(tiny_recs, tmp_path):
    """4 iterations straight == 2 iterations, stop, resume, 2 more (momentum, data, schedule)."""
    common = ("train.lr_schedule=poly", "train.optimizer=sgd", "data.val_rec=null",
              "data.scales=[0.75,1.0,1.25]", "model.bn_frozen=false")
    straight = train(tiny_config(tiny_recs, str(tmp_path / "a"), "train.max_iters=4", *common),
                     progress=False)
    train(tiny_config(tiny_recs, str(tmp_path / "b"), "train.max_iters=2", *common),
          progress=False)
    resumed = train(tiny_config(tiny_recs, str(tmp_path / "b"), "train.max_iters=4", *common),
                    resume=str(tmp_path / "b"), progress=False)
    assert resumed["iterations"] == 4
    a = duc_hdc.load(straight["final"])._collect_params_with_prefix()
    b = duc_hdc.load(resumed["final"])._collect_params_with_prefix()
    for name in a:
        np.testing.assert_allclose(b[name].data().asnumpy(), a[name].data().asnumpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    # a different data order would not match: a fresh run with another seed differs
    other = train(tiny_config(tiny_recs, str(tmp_path / "c"), "train.max_iters=4",
                              "train.seed=7", *common), progress=False)
    assert other["checksum"] != straight["checksum"]


def test_validation_keeps_best_and_writes_curves(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.epochs=2")
    summary = duc_hdc.train(cfg, progress=False)  # with the recipe's validator
    assert len(summary["history"]) == 2
    assert all(0.0 <= h["mean_iou"] <= 1.0 for h in summary["history"])
    best = max(h["mean_iou"] for h in summary["history"])
    assert summary["best"]["mean_iou"] == best
    assert os.path.exists(tmp_path / "run" / "best.params")
    assert os.path.getsize(tmp_path / "run" / "curves.png") > 1000
    with open(tmp_path / "run" / "config.yaml") as f:
        assert "train_rec" in f.read()
    # keep_last=2 checkpoints, the newest named by latest.json
    ckpts = sorted(f for f in os.listdir(tmp_path / "run" / "checkpoints")
                   if f.endswith(".params"))
    assert len(ckpts) == 2
    assert Checkpointer(str(tmp_path / "run")).latest().endswith(ckpts[-1][:-7])


def test_non_finite_update_stops_before_any_damaged_checkpoint(tiny_recs, tmp_path,
                                                               monkeypatch):
    """lr 1e30 from iteration 3: the update makes the weights non-finite. The old loop saved
    them as ckpt-3 and named it the last good checkpoint; now nothing non-finite is written."""
    from duc_hdc.training import trainer as train_mod

    monkeypatch.setattr(train_mod, "learning_rate", lambda it, *a: 0.01 if it < 2 else 1e30)
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.clip_gradient=null",
                      "data.val_rec=null")
    with pytest.raises(TrainingError, match="non-finite") as err:
        train(cfg, progress=False)
    assert not os.path.exists(tmp_path / "run" / "final.params")
    # the message names the last good checkpoint, which exists, is the newest and is finite
    stem = str(err.value).split("last good checkpoint is ")[1].split(";")[0]
    assert stem.endswith("ckpt-00000002")
    assert Checkpointer(str(tmp_path / "run")).latest() == stem
    duc_hdc.load(stem + ".params")  # refuses non-finite weights
    assert not os.path.exists(stem[:-1] + "3.params")


def test_non_finite_gradients_stop_the_step_before_the_update():
    from duc_hdc.training.trainer import _check_step

    state = dict(iteration=7)
    losses = [mx.nd.array([0.5]), mx.nd.array([0.7])]
    assert _check_step(losses, mx.nd.array([3.0]), 0, state, 0.1, "ckpt") == pytest.approx(0.6)
    with pytest.raises(TrainingError, match=r"non-finite gradients \(sum of squares nan\) at "
                                            r"epoch 0, iteration 7.*last good checkpoint is ck"):
        _check_step(losses, mx.nd.array([np.nan]), 0, state, 0.1, "ckpt")
    with pytest.raises(TrainingError, match=r"non-finite loss \(inf\) and gradients"):
        _check_step([mx.nd.array([np.inf])], mx.nd.array([np.inf]), 0, state, 0.1, None)


def test_nan_params_refused_by_the_loader_and_as_init_params(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"), "train.max_iters=1", "data.val_rec=null")
    summary = train(cfg, progress=False)
    arrays = mx.nd.load(summary["final"])
    name = sorted(arrays)[3]
    arrays[name][:] = np.nan
    bad = str(tmp_path / "nan.params")
    mx.nd.save(bad, arrays)
    shutil.copy(sidecar_path(summary["final"]), sidecar_path(bad))  # the model's settings
    with pytest.raises(ValueError, match="nan.params holds non-finite values .*in %s" % name):
        duc_hdc.load(bad)
    with pytest.raises(ConfigError, match="model.init_params: .*nan.params holds non-finite "
                                          "values .*%s" % name):
        train(tiny_config(tiny_recs, str(tmp_path / "new"), "train.max_iters=1",
                          "data.val_rec=null", "model.init_params=%s" % bad), progress=False)


def test_resume_without_checkpoint_is_an_error(tiny_recs, tmp_path):
    cfg = tiny_config(tiny_recs, str(tmp_path / "run"))
    with pytest.raises(TrainingError, match="no checkpoint found"):
        train(cfg, resume=str(tmp_path / "empty"), progress=False)


def test_loss_ignores_label_255_and_averages_valid_pixels():
    pred = mx.nd.array(np.log(np.array([[[[0.5, 0.25]], [[0.5, 0.75]]]], np.float32)))
    label = mx.nd.array([[[1, 255]]])
    loss = SegmentationLoss()(pred, label).asscalar()
    assert loss == pytest.approx(-np.log(0.5))  # only the first pixel counts
    label = mx.nd.array([[[255, 255]]])
    assert SegmentationLoss()(pred, label).asscalar() == 0.0


def test_learning_rate_schedules():
    cfg = dict(lr=1e-4, warmup_iters=0, lr_schedule="step", lr_factor=0.5, lr_step_epochs=5,
               lr_power=0.9)
    # the release: x0.5 every 5 epochs
    assert learning_rate(0, cfg, 100, 5000) == pytest.approx(1e-4)
    assert learning_rate(499, cfg, 100, 5000) == pytest.approx(1e-4)
    assert learning_rate(500, cfg, 100, 5000) == pytest.approx(5e-5)
    assert learning_rate(1500, cfg, 100, 5000) == pytest.approx(1.25e-5)
    cfg.update(lr_schedule="poly", warmup_iters=10)
    assert learning_rate(4, cfg, 100, 110) == pytest.approx(1e-4 * 5 / 10)
    assert learning_rate(60, cfg, 100, 110) == pytest.approx(1e-4 * 0.5 ** 0.9)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'lrr' at train; valid: .*lr,"):
        load_config("synthetic", ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"train.epochs: expected int, got 'ten'"):
        load_config("synthetic", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="train.kvstore: 'nccl' is not one of"):
        load_config("synthetic", ["train.kvstore=nccl"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("synthetic", ["train.lr"])
    with pytest.raises(ConfigError, match="data.crop_size = \[100, 100\]: must be two positive multiples of 8"):
        load_config("synthetic", ["data.crop_size=[100,100]"])
    with pytest.raises(ConfigError, match="model.name: 'resnet' is not a model"):
        load_config("synthetic", ["model.name=resnet"])
    with pytest.raises(ConfigError, match="neither a YAML file nor a packaged recipe; recipes: "
                                          ".*cityscapes"):
        load_config("citiscapes")
    cfg = load_config("cityscapes")
    del cfg["train"]["seed"]
    with pytest.raises(ConfigError, match="missing key train.seed"):
        validate(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))


def test_every_packaged_recipe_validates_and_builds_its_model():
    from duc_hdc.config import available_configs, model_overrides
    from duc_hdc.models.network import resolve_settings

    names = available_configs()
    assert {"cityscapes", "cityscapes_coarse", "voc", "kitti_road", "synthetic"} <= set(names)
    for name in names:
        cfg = load_config(name)
        settings = resolve_settings(cfg["model"]["name"], **model_overrides(cfg))
        assert settings["classes"] == cfg["model"]["classes"]
    release = load_config("cityscapes")
    assert release["train"]["lr"] == 1e-4 and release["train"]["wd"] == 5e-5
    assert release["data"]["crop_size"] == [800, 800] and release["data"]["anchor_jitter"] == 120
    assert apply_overrides(release, ["train.lr=2e-4"])["train"]["lr"] == 2e-4


def test_sigkill_loses_at_most_one_checkpoint_interval(tiny_recs, tmp_path):
    """A run killed with SIGKILL resumes from its last checkpoint through the CLI."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--config", "synthetic",
               "--no-progress"]
    sets = ["data.train_rec=%s" % tiny_recs["train"], "data.val_rec=null",
            "train.out_dir=%s" % run, "data.crop_size=[48,96]", "data.scales=[1.0]",
            "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1]",
            "train.batch_size_per_device=2", "train.epochs=50", "train.checkpoint_every_iters=2"]
    for kv in sets:
        command += ["--set", kv]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and json.load(open(pointer))["checkpoint"].endswith("00000004"):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stem = Checkpointer(str(run)).latest()
    done = json.load(open(stem + ".json"))["iteration"]
    assert done >= 4
    resumed = subprocess.run(command + ["--resume", str(run), "--set", "train.max_iters=%d"
                                        % (done + 2)], capture_output=True, text=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "iteration %d" % done in resumed.stderr
    assert "trained %d iterations" % (done + 2) in resumed.stdout


# ------------------------------------------------------------------ verified checkpoints
def _four_checkpoints(tiny_recs, run):
    cfg = tiny_config(tiny_recs, str(run), "train.max_iters=4", "data.val_rec=null",
                      "train.keep_last=3")
    return train(cfg, progress=False)


def test_checkpoint_records_size_and_sha256_of_its_files(tiny_recs, tmp_path):
    from duc_hdc.fileio import sha256sum

    _four_checkpoints(tiny_recs, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    stems = sorted(f[:-5] for f in os.listdir(ckpts) if f.startswith("ckpt-") and
                   f.endswith(".json"))
    assert stems == ["ckpt-00000002", "ckpt-00000003", "ckpt-00000004"]
    for stem in stems:
        doc = json.load(open(ckpts / (stem + ".json")))
        for ext in ("params", "states"):
            path = ckpts / ("%s.%s" % (stem, ext))
            assert doc["files"][ext] == dict(name=path.name, size=os.path.getsize(path),
                                             sha256=sha256sum(str(path)))
        assert doc["num_devices"] == 1 and doc["num_workers"] == 1
    assert Checkpointer(str(tmp_path / "run")).verify(str(ckpts / stems[-1])) == []


def _overwrite(path, nbytes=5000, offset=1000):
    with open(path, "r+b") as f:  # damaged in place, same size
        f.seek(offset)
        f.write(b"\xff" * nbytes)


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("ext,damage", [("params", _overwrite), ("params", _truncate),
                                        ("states", _truncate)])
def test_resume_falls_back_from_a_damaged_newest_checkpoint(tiny_recs, tmp_path, caplog, ext,
                                                            damage):
    run = tmp_path / "run"
    _four_checkpoints(tiny_recs, run)
    newest = run / "checkpoints" / ("ckpt-00000004." + ext)
    size = os.path.getsize(newest)
    damage(str(newest))
    assert (os.path.getsize(newest) == size) == (damage is _overwrite)
    caplog.set_level("INFO", logger="duc_hdc")
    summary = train(None, resume=str(run), overrides=["train.epochs=2", "train.max_iters=5"], progress=False)
    assert summary["iterations"] == 5
    text = caplog.text
    assert "ckpt-00000004." + ext in text and "damaged" in text
    assert "resuming from ckpt-00000003, the newest intact checkpoint" in text
    assert "resumed from %s" % (run / "checkpoints" / "ckpt-00000003") in text
    assert os.path.exists(str(newest) + ".damaged")  # set aside, not resumed, not pruned over
    duc_hdc.load(summary["final"])  # finite


def test_resume_survives_a_damaged_latest_pointer_and_gives_its_config(tiny_recs, tmp_path):
    from duc_hdc.training.trainer import resumed_config

    run = tmp_path / "run"
    _four_checkpoints(tiny_recs, run)
    (run / "checkpoints" / "latest.json").write_text('{"checkp')  # truncated
    cfg = resumed_config(str(run), overrides=["train.epochs=2", "train.max_iters=5"])
    assert cfg["train"]["max_iters"] == 5 and cfg["train"]["keep_last"] == 3
    summary = train(cfg, resume=str(run), progress=False)  # the whole config: compared, equal
    assert summary["iterations"] == 5


def test_resume_stops_when_no_checkpoint_is_intact(tiny_recs, tmp_path):
    run = tmp_path / "run"
    _four_checkpoints(tiny_recs, run)
    for it in (2, 3, 4):
        _overwrite(str(run / "checkpoints" / ("ckpt-%08d.params" % it)))
    before = os.path.getmtime(run / "final.params")
    with pytest.raises(TrainingError, match=r"no intact checkpoint .*ckpt-00000004.params has "
                                            r"sha256 .*ckpt-00000002.params has sha256"):
        train(None, resume=str(run), overrides=["train.epochs=2", "train.max_iters=5"], progress=False)
    assert os.path.getmtime(run / "final.params") == before  # nothing trained, nothing written


# ---------------------------------------------------------------------- strict resume
def test_resume_keeps_the_saved_keep_last(tiny_recs, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_recs, str(run), "train.max_iters=4", "data.val_rec=null",
                      "train.keep_last=10"), progress=False)
    train(None, resume=str(run), overrides=["train.epochs=2", "train.max_iters=6"], progress=False)
    kept = [f for f in os.listdir(run / "checkpoints") if f.endswith(".params")]
    assert len(kept) == 6  # keep_last 10 (the run's), not the recipe's 2


def test_resume_applies_extending_keys_and_refuses_the_others(tiny_recs, tmp_path, caplog):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_recs, str(run), "train.max_iters=2", "data.val_rec=null")
    train(cfg, progress=False)
    for override in ("train.lr=0.5", "data.train_rec=%s" % tiny_recs["val"],
                     "train.keep_last=7"):
        key = override.split("=")[0]
        with pytest.raises(ConfigError, match=r"--resume: %s is .* in the run being resumed.*"
                                              r"model.init_params=.*ckpt-00000002.params"
                           % key.replace(".", r"\.")):
            train(None, resume=str(run), overrides=[override, "train.max_iters=3"],
                  progress=False)
    # a whole recipe with resume: compared key by key with the saved one
    with pytest.raises(ConfigError, match=r"train\.lr is 0\.01 in the run being resumed, 0\.5"):
        train(apply_overrides(cfg, ["train.lr=0.5"]), resume=str(run), progress=False)
    caplog.set_level("INFO", logger="duc_hdc")
    summary = train(apply_overrides(cfg, ["train.max_iters=3", "train.log_every_iters=2"]),
                    resume=str(run), progress=False)
    assert summary["iterations"] == 3
    assert "resume: train.max_iters changed from 2 to 3" in caplog.text
    assert "resume: train.log_every_iters changed from 1 to 2" in caplog.text


def test_resume_refuses_other_devices_workers_or_batch(tiny_recs, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_recs, str(run), "train.max_iters=2", "data.val_rec=null"),
          progress=False)
    with pytest.raises(ConfigError, match=r"the run trained on 1 device\(s\), now 2.*"
                                          r"--cpu-devices 1"):
        train(None, ctx=[mx.cpu(0), mx.cpu(1)], resume=str(run),
              overrides=["train.max_iters=3"], progress=False)
    with pytest.raises(ConfigError, match=r"train\.batch_size_per_device is 2 in the run being "
                                          r"resumed, 4 now"):
        train(None, resume=str(run), overrides=["train.batch_size_per_device=4"],
              progress=False)
    meta = run / "checkpoints" / "ckpt-00000002.json"
    doc = json.load(open(meta))
    doc["num_workers"] = 2  # as written by worker 0 of a 2-worker job
    json.dump(doc, open(meta, "w"))
    with pytest.raises(ConfigError, match=r"the run had 2 distributed worker\(s\), now 1"):
        train(None, resume=str(run), overrides=["train.max_iters=3"], progress=False)


def test_amp_loss_scaler_state_is_saved_and_restored(tmp_path):
    from mxnet.contrib.amp.loss_scaler import LossScaler
    from duc_hdc.training.checkpoints import loss_scaler_state, restore_loss_scaler

    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd")
    assert loss_scaler_state(trainer) is None
    trainer._amp_loss_scaler = LossScaler()
    trainer._amp_loss_scaler._loss_scale = 512.0
    trainer._amp_loss_scaler._next_loss_scale = 256.0
    trainer._amp_loss_scaler._unskipped = 17
    saved = json.loads(json.dumps(loss_scaler_state(trainer)))  # as the checkpoint JSON
    other = mx.gluon.Trainer(net.collect_params(), "sgd")
    other._amp_loss_scaler = LossScaler()
    restore_loss_scaler(other, saved)
    assert (other._amp_loss_scaler.loss_scale, other._amp_loss_scaler._next_loss_scale,
            other._amp_loss_scaler._unskipped) == (512.0, 256.0, 17)


def _states(path):
    import pickle

    states = pickle.loads(open(path, "rb").read())
    if isinstance(states, tuple):  # (states, optimizer)
        states = states[0]
    flat = {}
    for idx, value in states.items():
        for j, arr in enumerate(value if isinstance(value, (tuple, list)) else [value]):
            if arr is not None:
                flat["%s/%d" % (idx, j)] = arr.asnumpy()
    return flat


def _every_array(summary):
    stem = Checkpointer(summary["run_dir"]).latest()
    params = {k: v.asnumpy() for k, v in mx.nd.load(stem + ".params").items()}
    return params, _states(stem + ".states")


@pytest.mark.parametrize("kvstore,ctx", [("local", [mx.cpu(0)]),
                                         ("device", [mx.cpu(0), mx.cpu(1)])])
def test_mid_epoch_resume_equals_the_straight_run_for_every_array(tiny_recs, tmp_path, kvstore,
                                                                  ctx):
    """Parameters, BatchNorm statistics and momentum, with loader workers and validation."""
    per_epoch = 4 // len(ctx)
    total, stop = 3 * per_epoch, per_epoch + 1  # stop in the middle of the second epoch
    common = ("train.kvstore=%s" % kvstore, "data.num_workers=1", "model.bn_frozen=false",
              "data.scales=[0.75,1.0,1.25]", "train.lr_schedule=poly", "train.epochs=3",
              "train.checkpoint_every_iters=%d" % stop)
    straight = duc_hdc.train(tiny_config(tiny_recs, str(tmp_path / "a"), *common), ctx=ctx,
                             progress=False)
    first = tiny_config(tiny_recs, str(tmp_path / "b"), "train.max_iters=%d" % stop, *common)
    duc_hdc.train(first, ctx=ctx, progress=False)
    resumed = duc_hdc.train(apply_overrides(first, ["train.max_iters=null"]), ctx=ctx,
                            resume=str(tmp_path / "b"), progress=False)
    assert straight["iterations"] == resumed["iterations"] == total
    assert len(resumed["history"]) == 3  # validated after every epoch, before and after resume
    # validation measured the same network (the statistics best.params holds) in both runs
    assert resumed["history"] == straight["history"]
    pa, sa = _every_array(straight)
    pb, sb = _every_array(resumed)
    assert sorted(pa) == sorted(pb) and sorted(sa) == sorted(sb) and len(sa) > 10
    stats = [k for k in pa if "running" in k or "moving" in k]
    assert len(stats) > 10  # BatchNorm statistics are among the arrays compared
    for name in pa:
        np.testing.assert_allclose(pb[name], pa[name], rtol=1e-6, atol=1e-7, err_msg=name)
    for name in sa:
        np.testing.assert_allclose(sb[name], sa[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert resumed["checksum"] == straight["checksum"]  # the logged one covers every array


# --------------------------------------------------------------------- mixed precision
def test_only_float16_gets_the_amp_loss_scaler(monkeypatch):
    """bfloat16 trains without MXNet AMP's loss scaler (float32's range: nothing to scale;
    its per-step multi_all_finite over every gradient took 539 ms on CPU); float16 gets it."""
    from mxnet.contrib import amp

    from duc_hdc.training.trainer import attach_loss_scaler

    attached = []
    monkeypatch.setattr(amp, "init_trainer", attached.append)
    trainer = object()
    assert attach_loss_scaler(trainer, "bfloat16") is False
    assert attach_loss_scaler(trainer, None) is False
    assert attached == []
    assert attach_loss_scaler(trainer, "float16") is True
    assert attached == [trainer]


def test_amp_dtype_follows_the_devices_and_refuses_float16_on_cpu(monkeypatch):
    from duc_hdc.training.trainer import amp_target_dtype

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)  # the CPU flags decide here

    amx, avx512_bf16, avx2 = ({"amx_tile", "amx_bf16", "avx512f"}, {"avx512f", "avx512_bf16"},
                              {"avx2", "fma"})
    assert amp_target_dtype(False, [mx.cpu()], avx2) is None
    assert amp_target_dtype(True, [mx.cpu()], amx) == "bfloat16"
    assert amp_target_dtype(True, [mx.gpu(0)], avx2) == "float16"  # a context object only
    assert amp_target_dtype("bfloat16", [mx.cpu(0), mx.cpu(1)], avx512_bf16) == "bfloat16"
    for flags in (avx2, {"avx512f", "avx512bw"}):  # oneDNN 2.4 cannot train in bf16 there
        for amp in (True, "bfloat16"):
            with pytest.raises(ConfigError, match=r"train.amp: this CPU .* neither AMX "
                                                  r".*use --set train.amp=false"):
                amp_target_dtype(amp, [mx.cpu()], flags)
    with pytest.raises(ConfigError, match="train.amp: float16 mixed precision needs GPUs"):
        amp_target_dtype("float16", [mx.cpu()])
    with pytest.raises(ConfigError, match="train.amp: bfloat16 .* on GPUs use --set "
                                          "train.amp=float16"):
        amp_target_dtype("bfloat16", [mx.gpu(0)])
    with pytest.raises(ConfigError, match=r"train.amp: 'fp8' is not one of"):
        load_config("synthetic", ["train.amp=fp8"])
    assert load_config("synthetic", ["train.amp=bfloat16"])["train"]["amp"] == "bfloat16"


@pytest.mark.slow
def test_bfloat16_training_runs_where_the_cpu_has_it_and_is_refused_elsewhere(tiny_recs,
                                                                             tmp_path):
    """Through the CLI, in its own process (mxnet's AMP patches the operators process-wide).

    On a CPU with AMX_BF16 or AVX512_BF16 four bf16 steps run and lower the loss. On one
    without (AVX2 EPYC: oneDNN 2.4 failed in the first step with "could not create a primitive
    descriptor iterator") the run is refused in one line before anything is built."""
    import subprocess
    import sys

    from duc_hdc import runtime

    run = tmp_path / "run"
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--config", "synthetic",
               "--no-progress"]
    sets = ["data.train_rec=%s" % tiny_recs["train"], "data.val_rec=null",
            "train.out_dir=%s" % run, "data.crop_size=[48,96]", "data.scales=[1.0]",
            "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1,2]",
            "train.batch_size_per_device=2", "train.max_iters=4", "train.optimizer=sgd",
            "train.lr=0.05", "train.warmup_iters=0", "train.lr_schedule=constant",
            "train.log_every_iters=1", "train.amp=bfloat16"]
    for kv in sets:
        command += ["--set", kv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if runtime.bf16_support() is None:
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert lines and lines[-1] == "error: train.amp: %s; use --set train.amp=false" % (
            runtime.no_bf16_reason())
        assert not (run / "metrics.jsonl").exists()
        return
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mixed precision: mxnet AMP, bfloat16" in done.stderr
    # no loss scaler: bfloat16 needs none (and its gradient check cost 0.5 s a step)
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.json"))
    assert ckpts and json.load(open(ckpts[-1]))["loss_scaler"] is None
    rows = [json.loads(l) for l in open(run / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    duc_hdc.load(str(run / "final.params"))  # finite float32 weights, loadable


def test_bf16_training_refusal_reads_as_one_sentence_under_a_capped_isa(monkeypatch):
    """A CPU with AVX512_BF16 whose oneDNN ``DNNL_MAX_CPU_ISA`` holds below AVX512_CORE: the
    refusal names the variable. It read "... (unset it, or set AVX512_CORE_BF16 or higher)
    training; use ..." (the CPU reason's words had "training" appended)."""
    from duc_hdc.training.build import amp_target_dtype

    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    with pytest.raises(ConfigError) as info:
        amp_target_dtype("bfloat16", [mx.cpu()], {"avx512f", "avx512_bf16"})
    assert str(info.value) == (
        "train.amp: DNNL_MAX_CPU_ISA=AVX2 keeps oneDNN below AVX512_CORE, where it has no "
        "bfloat16 convolution (unset it, or set AVX512_CORE_BF16 or higher); use --set "
        "train.amp=false")
    # a CPU without bf16 hardware: its own lack is named, whatever the cap
    with pytest.raises(ConfigError, match=r"^train.amp: this CPU \(.*\) has neither AMX .*"
                                          r"bfloat16; use --set train.amp=false$"):
        amp_target_dtype("bfloat16", [mx.cpu()], {"avx2", "fma"})
