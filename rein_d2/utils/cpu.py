"""Whether this CPU computes bfloat16 natively, and a warning when a config asks for bfloat16
on one that does not: there PyTorch emulates it, and bfloat16 inference was measured several
times slower than float32 (docs/PERFORMANCE.md), the opposite of what the option is for."""
import functools
import logging
from typing import FrozenSet, Optional

import torch

__all__ = ["NATIVE_BFLOAT16_FLAGS", "cpu_flags", "native_bfloat16", "warn_if_slow_bfloat16"]

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of bfloat16 arithmetic: x86 AVX-512 BF16 (Intel Cooper Lake, Sapphire
# Rapids and later Xeons; AMD Zen 4 and later) and AMX (Intel Sapphire Rapids and later);
# Arm's BF16 extension ("bf16" on the Features line, e.g. Neoverse V1 / N2, Graviton 3).
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(path: str = "/proc/cpuinfo") -> Optional[FrozenSet[str]]:
    """The first CPU's feature flags (x86 "flags", Arm "Features"); None where the file is not
    readable (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return frozenset()


@functools.lru_cache(maxsize=None)
def native_bfloat16() -> bool:
    """True on a CPU with bfloat16 instructions (NATIVE_BFLOAT16_FLAGS); without /proc/cpuinfo,
    PyTorch's own check of AVX-512 BF16 and AMX."""
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BFLOAT16_FLAGS)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


_warned = []


def warn_if_slow_bfloat16(cfg) -> bool:
    """Log a warning (once per process) when ``cfg`` runs bfloat16 on a CPU without native
    bfloat16: inference (MODEL.MASK2FORMER.TEST.AUTOCAST) or training (SOLVER.AMP). Returns
    whether it warned."""
    keys = []
    if cfg.MODEL.MASK2FORMER.TEST.AUTOCAST == "bfloat16":
        keys.append("MODEL.MASK2FORMER.TEST.AUTOCAST bfloat16")
    if cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.PRECISION == "bfloat16":
        keys.append("SOLVER.AMP.PRECISION bfloat16")
    if _warned or not keys or cfg.MODEL.DEVICE != "cpu" or native_bfloat16():
        return False
    _warned.append(True)
    logger.warning(
        "%s on a CPU without native bfloat16 (PyTorch CPU capability %s; no avx512_bf16, "
        "amx_bf16 or bf16 flag in /proc/cpuinfo): PyTorch emulates it here, which makes "
        "inference several times slower than float32, not faster. Leave it out (float32), or "
        "use a CPU with AVX-512 BF16 or AMX (docs/PERFORMANCE.md).",
        " and ".join(keys), torch.backends.cpu.get_cpu_capability())
    return True
