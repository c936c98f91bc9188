"""Atomic writes: a file or a whole folder appears complete under its name, or not at all.

    with write_dir_atomically(run / "step_000012") as staging:   # an empty folder beside the target
        (staging / "loop_state.json").write_text(...)             # fill it as you like
    # here: every file and folder in it fsynced, renamed to run/step_000012 (an old one swapped out)

    write_file_atomically(path, text_or_bytes)                   # temp file, fsync, os.replace

Every place in hone that writes a checkpoint, a trainer state, a cache entry or a file it rewrites
goes through these two functions, so a process killed at any instant leaves the old version or the
new one, never a torn mix, and a power cut after the call returns loses neither. Standard library
only: any module of hone can import it without pulling torch or making an import cycle.

On disk, beside TARGET while a write is under way (both start with a dot, so globs of visible
names never see them):
    .TARGET.staging-XXXXXXXX   the folder being filled; removed if the block raises
    .TARGET.old-XXXXXXXX       an existing TARGET swapped out by the rename, removed right after
A kill can leave either behind; `remove_staging_debris(parent)` clears them, and puts an `.old`
folder back under its name in the one case where the kill fell between the two renames of a swap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_STAGING = ".staging-"
_OLD = ".old-"


@contextmanager
def write_dir_atomically(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on a clean exit make it `target`, durably.

    1) the block fills the staging folder; if it raises, the folder is removed and `target` is
       untouched; 2) every file, then every folder bottom-up, is fsynced; 3) the folder is renamed
       to `target`: an existing `target` is first renamed aside and removed after (`replace=False`
       keeps an existing `target` and discards the new copy: for caches, where any complete copy
       will do); 4) the parent folder is fsynced, so the rename itself survives a power cut.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
        if replace:
            _rename_into_place(staging, target)
        elif not _rename_unless_present(staging, target):  # another writer got there first; its copy is as good
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_file_atomically(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to a temp file beside `path`, fsync it, rename it to `path`,
    fsync the folder. An exception leaves `path` as it was and no temp file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_staging_debris(parent: str | Path) -> None:
    """Clear what killed `write_dir_atomically` calls left in `parent` (see the module docstring).
    Call it when no write into `parent` is under way, e.g. when a run starts."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for path in sorted(parent.glob(f".*{_OLD}*")):
        name = path.name[1:].rsplit(_OLD, 1)[0]
        if not (parent / name).exists():  # killed between the two renames: the old copy is the whole one
            os.replace(path, parent / name)
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in parent.glob(f".*{_STAGING}*"):
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- helpers
def _rename_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}{_OLD}{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(staging, target)  # a kill between these two renames: remove_staging_debris puts old back
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
        _fsync_dir(target.parent)


def _rename_unless_present(staging: Path, target: Path) -> bool:
    """Rename `staging` to `target` unless `target` exists (also when it appears during the call)."""
    if target.exists():
        return False
    try:
        os.rename(staging, target)  # onto a folder that appeared meanwhile: refused (it is not empty)
    except OSError:
        if target.exists():
            return False
        raise
    _fsync_dir(target.parent)
    return True


def _fsync_tree(root: Path) -> None:
    """Every file under `root`, then every folder deepest first (their entries), then `root`."""
    folders = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            folders.append(path)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        _fsync_dir(folder)
    _fsync_dir(root)


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (names created or renamed in it) durable; a no-op where the OS can't."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
