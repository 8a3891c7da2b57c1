"""A full disk is a state, not a crash: recognise ENOSPC/EDQUOT however a library reports it, and say it in one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.core.errors import RmxError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122",
               "pytorchstreamwriter failed writing file")
"""How libraries that drop the errno say it: safetensors (Rust's `os error 28`), torch's zip writer."""
MB = 1 << 20


class DiskFull(RmxError):
    """No space (or quota) left while writing a run's files; the message says where, how much, and what to do."""

    def __init__(self, message: str, path: str | Path | None = None, needed: int | None = None,
                 checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        """The file or folder whose write failed."""
        self.needed = needed
        """Bytes the write needed, when known."""
        self.checkpoint = checkpoint
        """The last good checkpoint's name, when the writer knew it."""


def is_disk_full(error: BaseException | None) -> bool:
    """True when `error`, or an error it was raised from, is ENOSPC/EDQUOT, whatever its type."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return True
        if any(text in str(error).lower() for text in _FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of `path` (its nearest existing folder)."""
    try:
        info = os.statvfs(_existing(Path(path)))
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def device_of(path: str | Path) -> str:
    """`SOURCE (MOUNTPOINT)` of the file system holding `path`, from /proc/mounts; the mount point alone elsewhere."""
    target = _existing(Path(path)).resolve()
    mount = target
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            source, point = line.split()[:2]
            if point == str(mount):
                return f"{source} ({mount})"
    except (OSError, ValueError):
        pass
    return str(mount)


def _mb(size: int) -> str:
    return f"{size / MB:.0f}" if size >= MB else f"{size / MB:.2f}"


def disk_full(path: str | Path, needed: int | None = None, checkpoint: str | None = None,
              then: str = "free space and run the command again") -> DiskFull:
    """The one-line DiskFull for a write of `needed` bytes to `path`; `checkpoint` names the last good one."""
    free = free_bytes(path)
    sizes = ", ".join(part for part in (
        f"{_mb(needed)} MB needed" if needed is not None else None,
        f"{_mb(free)} MB free" if free is not None else None,
    ) if part)
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "there is no checkpoint yet"
    return DiskFull(f"no space left on {device_of(path)} while writing {path}"
                    f"{f' ({sizes})' if sizes else ''}; {kept}; {then}", path, needed, checkpoint)


def check_space(path: str | Path, needed: int, checkpoint: str | None = None,
                then: str = "free space and run the command again") -> str | None:
    """Before writing `needed` bytes under `path`: DiskFull when they cannot fit, a warning line when they
    barely do (less than twice the room), else None."""
    free = free_bytes(path)
    if free is None:
        return None
    if free < needed:
        raise disk_full(path, needed, checkpoint, then)
    if free < 2 * needed:
        return (f"low disk space on {device_of(path)}: {_mb(free)} MB free, the next write to {path} needs "
                f"{_mb(needed)} MB; free space before the one after")
    return None


def tree_bytes(folder: str | Path) -> int:
    """The size of the files under `folder` (0 when it is missing): what rewriting it will need again."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
