"""``duc-hdc benchmark`` library side: one --precision choice, the CPU / AMX / oneDNN report."""
import re

import pytest

from duc_hdc import runtime
from duc_hdc.inference.benchmark import format_report, resolve_mode, run_benchmark

TINY = dict(classes=5, base_width=8)


def test_resolve_mode_maps_precision_and_the_former_modes():
    assert resolve_mode() == ("fp32", "fused")
    assert resolve_mode("bf16") == ("bf16", "fused")
    assert resolve_mode(mode="fused") == ("fp32", "fused")
    assert resolve_mode(mode="fp32") == ("fp32", "plain")  # the former plain-network mode
    assert resolve_mode(mode="int8") == ("int8", "fused")
    assert resolve_mode("fp32", "plain") == ("fp32", "plain")
    with pytest.raises(ValueError, match="choose one of fp32, bf16, int8"):
        resolve_mode("fp16")
    with pytest.raises(ValueError, match="fp32 only"):
        resolve_mode("int8", "plain")
    with pytest.raises(ValueError, match="contradict"):
        resolve_mode("bf16", mode="int8")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_benchmark_each_precision_reports_cpu_and_isa(precision):
    kwargs = dict(iters=1, precision=precision, **TINY)
    if precision == "bf16" and runtime.bf16_support() is None:
        with pytest.raises(ValueError, match=re.escape(runtime.no_bf16_reason())):
            run_benchmark("duc_hdc_resnet18", (1, 3, 32, 64), **kwargs)
        return
    r = run_benchmark("duc_hdc_resnet18", (1, 3, 32, 64), **kwargs)
    assert r["precision"] == precision and r["graph"] == "fused" and r["median_s"] > 0
    state = runtime.amx_state()
    assert r["amx"] is state["enabled"] and r["amx_reason"] == state["reason"]
    assert r["onednn_isa"] == runtime.onednn_isa()
    text = format_report(r)
    assert "precision %s" % precision in text and "oneDNN ISA: %s" % r["onednn_isa"] in text
    assert ("AMX enabled" in text) is state["enabled"]
    assert state["reason"] in text
    if "amx_tile" not in runtime.cpu_flags():
        assert not state["enabled"]
    assert r["cpu"] in text
