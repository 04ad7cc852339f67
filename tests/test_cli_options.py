"""One set of options: every command that runs a network spells them the same way."""
import mxnet as mx
import pytest

from duc_hdc import cli

NETWORK_COMMANDS = ["predict", "evaluate", "export", "quantize", "benchmark"]
SHARED = ["--model", "--params", "--config", "--gpus", "--cpu", "--no-progress"]


def _options(command):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


@pytest.mark.parametrize("command", NETWORK_COMMANDS)
def test_network_commands_share_the_options(command):
    missing = [o for o in SHARED if o not in _options(command)]
    assert not missing, "%s lacks %s" % (command, missing)
    assert "--gpu" not in _options(command)  # one spelling: --gpus LIST


@pytest.mark.parametrize("command", ["train", "download", "quantize", "predict", "evaluate"])
def test_long_commands_take_no_progress(command):
    assert "--no-progress" in _options(command)


def test_data_commands_share_the_output_options():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    data = sub.choices["data"]
    dsub = next(a for a in data._actions if a.dest == "data_command")
    for name in ("cityscapes", "voc", "kitti_road"):
        opts = {o for a in dsub.choices[name]._actions for o in a.option_strings}
        assert {"--root", "--split", "--out", "--no-progress", "--skip-bad"} <= opts, name
        assert "--quiet" not in opts


def test_gpu_options_refused_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)  # a CPU-only machine
    rc = cli.main(["predict", "x.png", "--model", "duc_hdc_resnet18", "--out", "o",
                   "--gpus", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--gpus need(s) a GPU" in err


@pytest.mark.parametrize("argv, says", [
    # options that only mean something with another one were accepted and ignored before
    (["predict", "x.png", "--model", "duc_hdc_resnet18", "--out", "o", "--num-calib", "3"],
     "--num-calib counts the images of --calib-rec"),
    (["evaluate", "--model", "duc_hdc_resnet18", "--rec", "v.rec", "--worst", "3"],
     "--worst picks the images the --report DIR shows"),
    (["quantize", "--model", "duc_hdc_resnet18", "--calib-rec", "c.rec", "--out", "q",
      "--limit", "3"], "--limit limits the images of --eval-rec"),
])
def test_an_option_without_the_one_it_needs_is_refused(argv, says, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and says in err, err


def test_benchmark_warmup_is_not_negative(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["benchmark", "--model", "duc_hdc_resnet18", "--warmup", "-1"])
    assert stop.value.code == 2
    assert "expected an integer >= 0, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-5", "0", "nan", "soon"])
def test_launch_timeout_must_be_positive(value, capsys):
    """launch --timeout -5 killed the job at once (rc 124) before."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["launch", "-n", "1", "--timeout", value, "--", "true"])
    assert stop.value.code == 2
    assert "expected a number > 0, got %r" % value in capsys.readouterr().err


@pytest.mark.parametrize("command, what", [
    (["quantize", "--model", "m.params", "--calib-rec", "c.rec", "--out", "q"],
     "INT8 quantization (MKLDNN) runs on the CPU"),
    (["export", "--model", "m.params", "--shape", "1,3,64,64", "--out", "e"],
     "export runs on the CPU"),
])
def test_cpu_commands_refuse_gpu_options_on_a_gpu_machine(command, what, capsys, monkeypatch):
    """export took --gpus 0 on a GPU machine and ran on the CPU without a word."""
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 1)  # a GPU machine (nothing runs)
    rc = cli.main(command + ["--gpus", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and what in err and "drop --gpus" in err, err


def test_ctrl_c_in_train_is_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C printed a 27-line KeyboardInterrupt traceback from inside the training loop."""
    import duc_hdc

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(duc_hdc, "train", interrupted)
    run = str(tmp_path / "run")
    rc = cli.main(["train", "--config", "synthetic", "--cpu", "--set", "train.out_dir=%s" % run])
    err = capsys.readouterr().err
    assert rc == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("interrupted: ") and "duc-hdc train --resume %s" % run in err
