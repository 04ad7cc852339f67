"""The demo end to end on a tiny synthetic set: every stage runs and writes what it promises."""
import json
import os

from duc_hdc import cli


def test_demo_end_to_end_small(tmp_path, capsys):
    import duc_hdc.demo.pipeline as demo

    result = demo.run_demo(str(tmp_path), num_train=8, num_val=2, size=(64, 128),
                           overrides=["train.epochs=1", "data.crop_size=[64,128]",
                                      "train.batch_size_per_device=4", "data.num_workers=0",
                                      "model.base_width=4", "train.val_every_epochs=1"])
    assert 0.0 <= result["mean_iou"] <= 1.0
    assert os.path.exists(result["params"]) and os.path.exists(result["curves"])
    assert len([f for f in os.listdir(result["predictions"]) if f.endswith("_panel.png")]) == 2
    assert any(f.endswith("-symbol.json") for f in result["export"])
    labelids = os.listdir(os.path.join(result["eval"], "labelIds"))
    assert len(labelids) == 2 and all(f.endswith("_labelIds.png") for f in labelids)
    with open(tmp_path / "demo.json") as f:
        assert json.load(f)["mean_iou"] == result["mean_iou"]
    # a second run reuses data, RecordIO and the trained model, and prints the summary
    rc = cli.main(["demo", "--workdir", str(tmp_path), "--set", "model.base_width=4",
                   "--set", "data.crop_size=[64,128]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "mIoU: %.4f" % result["mean_iou"]
    assert "training already done" not in out  # logged, not printed
