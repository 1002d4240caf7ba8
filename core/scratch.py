"""Scratch folders of a run: the decoded image shards, prediction depth's probe files and the encoded images
of a ``parquet:``/``hf:`` source spilled while loading (:mod:`core.data.blob_spill`).

Where: under ``INFOSCOPE_CACHE`` when it is set, else the system's temporary folder. Each folder is created by
:func:`make_scratch` with an owner file (host name and process id) and removed by its owner when the run ends.

A run killed with SIGKILL (or by the OOM killer, or a power cut) cannot remove its folders, and at 224×224
one run's decoded shards are gigabytes (12 GB for 20,000 images). So every new scratch folder first reclaims
the folders of dead owners (:func:`sweep_stale`): a folder whose owner file names *this* host and a process that
no longer exists. Folders of live processes, of other hosts (a cache on a shared filesystem seen by several
Ray nodes) and folders without an owner file are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import weakref
from pathlib import Path

OWNER_FILE = ".infoscope-owner"
PREFIXES = ("infoscope-images-", "infoscope-depth-", "infoscope-blobs-")


def scratch_parent(parent: str | Path | None = None) -> Path:
    """The folder scratch folders go in: ``parent``, else ``$INFOSCOPE_CACHE``, else the system temp folder."""
    return Path(parent if parent is not None else (os.environ.get("INFOSCOPE_CACHE") or tempfile.gettempdir()))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (``kill(pid, 0)``; a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(parent: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders under ``parent`` whose owner (on this host) has died; returns them."""
    here = socket.gethostname()
    removed = []
    base = scratch_parent(parent)
    for prefix in PREFIXES if base.is_dir() else ():
        for folder in base.glob(f"{prefix}*"):
            try:
                owner = json.loads((folder / OWNER_FILE).read_text())
                host, pid = str(owner["host"]), int(owner["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours, still being created, or written by an older version: leave it
            if host != here or pid == os.getpid() or pid_alive(pid):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def make_scratch(prefix: str, parent: str | Path | None = None) -> Path:
    """A new empty folder ``parent/prefixXXXX`` with an owner file, after reclaiming dead owners' folders.

    The caller removes it (``shutil.rmtree``) when done."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown scratch prefix {prefix!r}")
    base = scratch_parent(parent)
    base.mkdir(parents=True, exist_ok=True)
    sweep_stale(base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    tmp = path / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    tmp.replace(path / OWNER_FILE)
    return path


class ScratchDir:
    """A scratch folder (:func:`make_scratch`) removed by :meth:`remove` or when this object is
    garbage-collected, whichever comes first."""

    def __init__(self, prefix: str, parent: str | Path | None = None) -> None:
        self.path = make_scratch(prefix, parent)
        self._finalizer: weakref.finalize | None = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def remove(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __reduce__(self) -> tuple:
        """A copy sent to another process (a DataLoader worker, a Ray task) only borrows the folder: it never
        removes it (only the owner's object does)."""
        return (_borrowed, (type(self), str(self.path)))


def _borrowed(cls: type[ScratchDir], path: str) -> ScratchDir:
    """A ``cls`` naming the existing folder ``path``, without the finalizer that would remove it."""
    obj = cls.__new__(cls)
    obj.path = Path(path)
    obj._finalizer = None
    return obj
