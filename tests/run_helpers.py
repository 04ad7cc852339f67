"""Helpers of the run-folder tests (test_run_folder.py, test_resume_metrics.py): a tiny run's
``--set`` strings, a folder snapshot, the CLI's one error line."""
import hashlib
import os


def tiny_sets(recs, out_dir, *extra):
    """``--set`` strings of a tiny run (as tests/test_train.py's tiny_config), no validation."""
    return ["data.train_rec=%s" % recs["train"], "data.val_rec=null",
            "train.out_dir=%s" % out_dir, "data.crop_size=[48,96]", "data.scales=[1.0]",
            "data.num_workers=0", "model.base_width=4", "model.aspp_rates=[1,2]",
            "train.batch_size_per_device=2", "train.epochs=1", "train.optimizer=sgd",
            "train.lr=0.01", "train.warmup_iters=0", "train.lr_schedule=constant",
            "train.checkpoint_every_iters=1", "train.log_every_iters=1",
            "train.val_every_epochs=1"] + list(extra)


def snapshot(folder):
    """Every file under ``folder``: relative path -> (size, sha256, mtime_ns)."""
    out = {}
    for root, dirs, files in os.walk(str(folder)):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, str(folder))
            if os.path.isdir(path):
                out[rel + "/"] = None
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = (os.path.getsize(path), digest, os.stat(path).st_mtime_ns)
    return out


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    return lines[0]
