"""Cost accounting: device-seconds and peak memory per stage, priced with a configurable $/device-hour table."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping

from engine.core.errors import RmxError
from engine.core.io import atomic_write_json

COST_FILE = "cost.json"
DEFAULT_PRICES: dict[str, float] = {
    "h100-sxm": 2.69,
    "h100": 2.49,
    "rtx-pro-6000": 1.89,
}
"""USD per device-hour, RunPod on-demand as the paper quotes it (App. D, Apr 2026). A device whose kind is
not here is reported without a price; give others with a --prices file."""


def device_kind(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` → `nvidia-h100-80gb-hbm3`: lowercase words joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class CostRecord:
    """What one stage used."""

    stage: str
    device: str
    """The device's own name (torch.cuda.get_device_name, or `cpu`)."""
    devices: int
    seconds: float
    """Wall-clock seconds of the stage."""
    device_seconds: float
    """seconds × devices."""
    peak_memory_bytes: int
    """Peak device memory (CUDA), or the process's peak resident memory on the CPU."""
    started: float

    def to_json(self) -> dict:
        return asdict(self)


def _device() -> tuple[str, int]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), 1
    return "cpu", 1


def _peak_memory() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class Meter:
    """`with Meter("train", folder):` writes folder/cost.json when the stage ends, however it ends."""

    def __init__(self, stage: str, folder: str | Path):
        self.stage = stage
        self.folder = Path(folder)

    def __enter__(self) -> "Meter":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.started = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._t0
        name, count = _device()
        record = CostRecord(self.stage, name, count, seconds, seconds * count, _peak_memory(), self.started)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / COST_FILE
        atomic_write_json(path, record.to_json())


def load_prices(path: str | Path | None) -> dict[str, float]:
    """The default price table, overridden by a JSON or TOML file of `device-kind = USD per hour`."""
    prices = dict(DEFAULT_PRICES)
    if path is None:
        return prices
    file = Path(path)
    if not file.is_file():
        raise RmxError(f"price table not found: {path}")
    try:
        if file.suffix == ".toml":
            import tomllib

            data = tomllib.loads(file.read_text(encoding="utf-8"))
        else:
            data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RmxError(f"{path}: not a price table ({error})") from None
    for key, value in data.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise RmxError(f"{path}: price of '{key}' must be a number of USD per hour ≥ 0, got {value!r}")
        prices[device_kind(str(key))] = float(value)
    return prices


def price_per_hour(device: str, prices: Mapping[str, float]) -> float | None:
    """The price of the most specific table entry whose kind appears in the device's kind (h100-sxm over h100)."""
    kind = device_kind(device)
    matches = [key for key in prices if key in kind]
    return prices[max(matches, key=len)] if matches else None


@dataclass(frozen=True)
class CostLine:
    run: str
    stage: str
    device: str
    device_seconds: float
    peak_memory_bytes: int
    usd: float | None
    """None when the device has no price in the table."""


def find_records(folder: Path) -> Iterator[CostRecord]:
    for path in sorted(Path(folder).rglob(COST_FILE)):
        try:
            yield CostRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise RmxError(f"{path}: not a cost record ({error})") from None


def cost_lines(folders: Mapping[str, Path], prices: Mapping[str, float]) -> list[CostLine]:
    """Every stage's cost under each named folder, priced."""
    lines = []
    for run, folder in folders.items():
        for record in find_records(folder):
            rate = price_per_hour(record.device, prices)
            usd = record.device_seconds / 3600 * rate if rate is not None else None
            lines.append(CostLine(run, record.stage, record.device, record.device_seconds,
                                  record.peak_memory_bytes, usd))
    return lines
