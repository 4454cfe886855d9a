"""bfloat16 on a CPU without bfloat16 instructions is emulated and slower than float32: a
config asking for it there gets one warning at start-up (load_config), naming the key."""
import logging

import pytest

import rein_d2.utils.cpu as cpu
from conftest import config_path
from rein_d2 import load_config

QUICKSTART = config_path("quickstart/synthstreets_dinov2_s.yaml")


READ_FLAGS = cpu.cpu_flags


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Writes a /proc/cpuinfo with the given flags line and makes rein_d2 read it (and warn
    afresh)."""
    def write(line):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{line}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(cpu, "cpu_flags", lambda: READ_FLAGS(str(path)))
        monkeypatch.setattr(cpu, "_warned", [])
        cpu.native_bfloat16.cache_clear()
    yield write
    cpu.native_bfloat16.cache_clear()


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "rein_d2.utils.cpu"]


def test_cpu_flags_are_read_from_the_x86_and_arm_lines(tmp_path):
    (tmp_path / "x86").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    assert {"avx2", "avx512_bf16"} <= READ_FLAGS(str(tmp_path / "x86"))
    assert "bf16" in READ_FLAGS(str(tmp_path / "arm"))
    assert READ_FLAGS(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("keys", [["MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16"],
                                  ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16"]])
def test_bfloat16_on_an_avx2_cpu_warns_once(cpuinfo, caplog, keys):
    cpuinfo("flags\t\t: fpu sse4_2 avx avx2 fma")
    with caplog.at_level(logging.WARNING, logger="rein_d2.utils.cpu"):
        load_config(QUICKSTART, keys + ["MODEL.DEVICE", "cpu"])
        load_config(QUICKSTART, keys + ["MODEL.DEVICE", "cpu"])  # a second load: no repeat
    (message,) = _warnings(caplog)
    assert f"{keys[-2]} bfloat16 on a CPU without native bfloat16" in message
    assert "avx512_bf16" in message and "docs/PERFORMANCE.md" in message


@pytest.mark.parametrize("flags,keys", [
    ("flags\t\t: avx2 avx512f avx512_bf16", ["MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16"]),  # Cooper Lake, Zen 4
    ("flags\t\t: avx2 avx512f amx_tile amx_bf16", ["MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16"]),  # Sapphire Rapids
    ("Features\t: fp asimd bf16", ["MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16"]),  # Arm BF16
    ("flags\t\t: avx2", ["MODEL.MASK2FORMER.TEST.AUTOCAST", "float16"]),  # not bfloat16
    ("flags\t\t: avx2", ["MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16", "MODEL.DEVICE", "cuda"]),
])
def test_no_warning_where_bfloat16_is_native_or_not_asked_for_on_the_cpu(cpuinfo, caplog, flags, keys):
    cpuinfo(flags)
    with caplog.at_level(logging.WARNING, logger="rein_d2.utils.cpu"):
        load_config(QUICKSTART, ["MODEL.DEVICE", "cpu"] + keys)
    assert _warnings(caplog) == []
