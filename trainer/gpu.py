"""GPU utilization and memory from NVML (``pynvml``, of the nvidia-ml-py package).

Each figure is None where it cannot be measured (no GPU, no NVML driver library, a MIG slice
that does not report utilization), never a made-up 0. A sample is two NVML queries, well under a
millisecond, and does not synchronize the CUDA stream.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from trainer.report import warn

GIB = 1024**3


@dataclass(frozen=True)
class GpuSample:
    utilization: float | None
    """Percent of the last sample period a kernel ran on the GPU (0 to 100)."""
    memory_gb: float | None
    """GPU memory in use on the device, in GiB (all processes, as nvidia-smi shows it)."""


NO_SAMPLE = GpuSample(None, None)


class GpuMonitor:
    """Samples the GPU that ``device`` (a ``torch.device``) runs on; samples nothing on a CPU."""

    def __init__(self, device: Any) -> None:
        self._nvml: Any = None
        self._handle: Any = None
        if getattr(device, "type", None) != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001  (no NVML: the figures are unknown, not an error)
            warn(f"NVML is not available ({exc}); GPU figures are unknown")
            return
        self._nvml = pynvml
        self._handle = _handle_of(pynvml, device)
        if self._handle is None:
            warn("NVML does not know this GPU; GPU figures are unknown")

    def sample(self) -> GpuSample:
        if self._handle is None:
            return NO_SAMPLE
        return GpuSample(self._utilization(), self._memory_gb())

    def _utilization(self) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except self._nvml.NVMLError:
            return None

    def _memory_gb(self) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used) / GIB
        except self._nvml.NVMLError:
            return None

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._nvml = self._handle = None


def _handle_of(pynvml: Any, device: Any) -> Any:
    """The NVML handle of a CUDA device. NVML numbers every GPU of the machine while CUDA numbers
    only the visible ones (CUDA_VISIBLE_DEVICES, as Ray sets it), so the device is found by its
    UUID, and by its index only where torch does not tell the UUID."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        for prefix in ("GPU-", "MIG-"):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(f"{prefix}{uuid}")
            except pynvml.NVMLError:
                continue
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None  # CUDA's index is not NVML's: better no figure than another GPU's
    try:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:
        return None
