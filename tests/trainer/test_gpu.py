"""GPU figures from NVML: real numbers where NVML answers, None (never 0) where it cannot."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from trainer import gpu
from trainer.gpu import GIB, GpuMonitor


class _FakeNvml(types.ModuleType):
    class NVMLError(Exception):
        pass

    def __init__(self, *, utilization_fails: bool = False) -> None:
        super().__init__("pynvml")
        self.utilization_fails = utilization_fails
        self.shut_down = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        if self.utilization_fails:
            raise self.NVMLError("Not Supported")  # as on a MIG slice
        return types.SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return types.SimpleNamespace(used=12 * GIB, total=80 * GIB)


def _cuda() -> Any:
    return types.SimpleNamespace(type="cuda", index=0)


def test_no_gpu_means_no_figures() -> None:
    """On a CPU the monitor reports None for both figures."""
    sample = GpuMonitor(types.SimpleNamespace(type="cpu", index=None)).sample()
    assert (sample.utilization, sample.memory_gb) == (None, None)


def test_nvml_figures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where NVML answers, utilization is its percentage and memory the GiB in use."""
    nvml = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpu, "_handle_of", lambda pynvml, device: "handle")
    monitor = GpuMonitor(_cuda())
    sample = monitor.sample()
    assert (sample.utilization, sample.memory_gb) == (87.0, 12.0)
    monitor.close()
    assert nvml.shut_down


def test_a_figure_nvml_cannot_give_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query NVML refuses (utilization on a MIG slice) gives None for that figure only."""
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(utilization_fails=True))
    monkeypatch.setattr(gpu, "_handle_of", lambda pynvml, device: "handle")
    sample = GpuMonitor(_cuda()).sample()
    assert (sample.utilization, sample.memory_gb) == (None, 12.0)


def test_a_gpu_nvml_does_not_know_gives_no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the device cannot be matched to an NVML handle, both figures are None."""
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.setattr(gpu, "_handle_of", lambda pynvml, device: None)
    sample = GpuMonitor(_cuda()).sample()
    assert (sample.utilization, sample.memory_gb) == (None, None)
