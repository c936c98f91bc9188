"""Atomic writes: whole or absent, fsynced before the rename, no debris after a failure."""

import os
from pathlib import Path

import pytest

import hone.files
from hone.files import remove_staging_debris, write_dir_atomically, write_file_atomically


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def fill(folder: Path, text: str) -> None:
    (folder / "a.txt").write_text(text)
    (folder / "sub").mkdir()
    (folder / "sub" / "b.bin").write_bytes(text.encode() * 3)


def test_a_written_folder_appears_whole_under_its_name_and_nothing_else_remains(tmp_path):
    target = tmp_path / "ckpt"
    with write_dir_atomically(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".ckpt.staging-")
        fill(staging, "new")
        assert not target.exists()  # invisible until the block ends
    assert (target / "a.txt").read_text() == "new" and (target / "sub" / "b.bin").read_bytes() == b"newnewnew"
    assert listing(tmp_path) == ["ckpt"]


def test_an_existing_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "ckpt"
    with write_dir_atomically(target) as staging:
        fill(staging, "old")
        (staging / "only-in-old").write_text("x")
    with write_dir_atomically(target) as staging:
        fill(staging, "new")
    assert listing(target) == ["a.txt", "sub"]  # no file of the old one survives
    assert (target / "a.txt").read_text() == "new"
    assert listing(tmp_path) == ["ckpt"]  # the swapped-out copy is gone


def test_a_write_interrupted_by_an_exception_leaves_the_old_folder_intact_and_no_debris(tmp_path):
    target = tmp_path / "ckpt"
    with write_dir_atomically(target) as staging:
        fill(staging, "old")
    with pytest.raises(KeyboardInterrupt):
        with write_dir_atomically(target) as staging:
            (staging / "a.txt").write_text("half of the new")
            raise KeyboardInterrupt  # any BaseException: a kill by Ctrl-C as much as a bug
    assert (target / "a.txt").read_text() == "old" and (target / "sub" / "b.bin").read_bytes() == b"oldoldold"
    assert listing(tmp_path) == ["ckpt"]

    with pytest.raises(OSError):
        with write_dir_atomically(tmp_path / "fresh") as staging:
            raise OSError("disk full")
    assert listing(tmp_path) == ["ckpt"]  # no half-made "fresh", no staging folder


def test_every_file_and_folder_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name an fsynced descriptor")
    synced: list[str] = []
    renamed_after: list[int] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        renamed_after.append(len(synced))
        real_replace(src, dst)

    monkeypatch.setattr(hone.files.os, "fsync", fsync)
    monkeypatch.setattr(hone.files.os, "replace", replace)
    with write_dir_atomically(tmp_path / "ckpt") as staging:
        fill(staging, "new")
    before_rename = synced[: renamed_after[0]]
    assert {str(staging / "a.txt"), str(staging / "sub" / "b.bin"), str(staging / "sub"), str(staging)} <= set(before_rename)
    assert synced[-1] == str(tmp_path)  # then the parent, so the rename itself is durable


def test_replace_false_keeps_a_folder_another_writer_made_first(tmp_path):
    target = tmp_path / "cache"
    with write_dir_atomically(target, replace=False) as staging:
        (staging / "weights").write_text("first")
    with write_dir_atomically(target, replace=False) as staging:
        (staging / "weights").write_text("second")
    assert (target / "weights").read_text() == "first"
    assert listing(tmp_path) == ["cache"]


def test_a_file_is_replaced_whole_and_an_interrupted_write_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "state.json"
    write_file_atomically(path, "old")  # the folder is made
    write_file_atomically(path, b"\x00new")
    assert path.read_bytes() == b"\x00new"

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(hone.files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        write_file_atomically(path, "newer")
    assert path.read_bytes() == b"\x00new"
    assert listing(path.parent) == ["state.json"]  # no temp file left


def test_debris_of_killed_writes_is_removed_and_an_orphaned_old_copy_put_back(tmp_path):
    (tmp_path / ".a.staging-1x").mkdir()  # killed while filling
    (tmp_path / "b").mkdir()
    (tmp_path / ".b.old-0f0f0f0f").mkdir()  # killed after the swap, before removing the old copy
    (tmp_path / ".c.old-1e1e1e1e").mkdir()  # killed between the two renames: c is missing
    (tmp_path / ".c.old-1e1e1e1e" / "whole").write_text("yes")
    (tmp_path / ".c.staging-2y").mkdir()
    remove_staging_debris(tmp_path)
    assert listing(tmp_path) == ["b", "c"]
    assert (tmp_path / "c" / "whole").read_text() == "yes"
