"""Files that survive a crash, and damaged ones set aside without filling the disk.

The history and the outbox both write this way: a temporary file, fsynced, renamed into
place, then the directory fsynced so the rename itself reaches the disk. A crash leaves
the old file or the new one, never half of one.
"""
from __future__ import annotations

import glob
import os
import time
from typing import Optional

KEEP_ASIDE = 3  # damaged files kept for a post-mortem; older ones are deleted


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data`: the whole of it or nothing, on disk when this returns."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # a half-written file would hold the space a full disk lacks
        except OSError:
            pass
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def set_aside(path: str, family: Optional[str] = None) -> str:
    """Rename a damaged file to `<path>.bad-<ns>` and delete all but the newest KEEP_ASIDE of its
    family: files in its directory named `<family>*.bad-<ns>` (family: by default the file's own
    name; "" for every damaged file of the directory)."""
    aside = f"{path}.bad-{time.time_ns()}"
    os.replace(path, aside)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = os.path.join(glob.escape(directory), glob.escape(os.path.basename(path) if family is None else family) + "*.bad-*")

    def stamp(name: str) -> int:
        suffix = name.rsplit(".bad-", 1)[1]
        return int(suffix) if suffix.isdigit() else 0
    for old in sorted(glob.glob(pattern), key=stamp)[:-KEEP_ASIDE]:
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass
    return aside
