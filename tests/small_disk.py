"""A full disk that is a real file system: a tmpfs of a chosen size mounted on the folder a
path writes to, so that writes fail with ENOSPC (not the EFBIG of a file-size limit).
Needs the right to mount (root, or CAP_SYS_ADMIN); `mount_refused` says why not where it
is missing, so that the fault is skipped rather than failed."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")     # tmpfs counts whole pages of file data
ROOMY = 1 << 30                       # "made room": tmpfs takes pages only as written


@functools.cache
def mount_refused() -> str:
    """'' where this process may mount a tmpfs, else one line saying why not."""
    probe = tempfile.mkdtemp(prefix="textclf-mount-probe-")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={PAGE}", "tmpfs", probe],
                              capture_output=True, text=True)
    except FileNotFoundError:
        os.rmdir(probe)
        return "no `mount` command here: a full file system (ENOSPC) cannot be made"
    if done.returncode != 0:
        os.rmdir(probe)
        why = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        return (f"mounting a tmpfs is not permitted here ({why}): the full file system "
                f"(ENOSPC) faults need root or CAP_SYS_ADMIN")
    subprocess.run(["umount", probe], check=True)
    os.rmdir(probe)
    return ""


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below `folder` (`findmnt`): none must be left behind."""
    listed = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                            text=True).stdout.split()
    root = str(Path(folder).resolve())
    return [target for target in listed if target == root or target.startswith(root + "/")]


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")


class SmallDisk:
    """`with SmallDisk(folder) as disk:` a tmpfs on `folder` (whatever it held is copied
    onto it when `keep`, else it starts empty); `disk.fill(room)` leaves `room` bytes free;
    `disk.make_room()` makes it large again, as a user who freed space would. On the way
    out it is unmounted, always; the folder then holds what the tmpfs held (`keep`), or
    what it held before plus that (not `keep`: a cache that only grows)."""

    def __init__(self, folder: Path, keep: bool = True) -> None:
        self.folder, self.keep = Path(folder), keep
        self.aside = self.folder.with_name(f".{self.folder.name}.under-tmpfs")
        self.mounted = False

    def __enter__(self) -> "SmallDisk":
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.aside, ignore_errors=True)
        self.folder.rename(self.aside)
        self.folder.mkdir()
        try:
            _mount("-t", "tmpfs", "-o", f"size={ROOMY}", "tmpfs", str(self.folder))
            self.mounted = True
            if self.keep:
                shutil.copytree(self.aside, self.folder, symlinks=True, dirs_exist_ok=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def used(self) -> int:
        stats = os.statvfs(self.folder)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    def fill(self, room: int) -> None:
        """Leave `room` bytes (rounded down to whole pages) free, from now on; at least a
        page in all (size=0 is no limit for tmpfs, and one cannot set a limit again)."""
        size = max(self.used() + room // PAGE * PAGE, PAGE)
        _mount("-o", f"remount,size={size}", str(self.folder))

    def make_room(self) -> None:
        _mount("-o", f"remount,size={ROOMY}", str(self.folder))

    def __exit__(self, *exc) -> None:
        if self.mounted:
            held = self.folder.with_name(f".{self.folder.name}.from-tmpfs")
            shutil.rmtree(held, ignore_errors=True)
            shutil.copytree(self.folder, held, symlinks=True)
            done = subprocess.run(["umount", str(self.folder)], capture_output=True, text=True)
            if done.returncode != 0:       # busy: a process of the path still in it
                subprocess.run(["umount", "-l", str(self.folder)], check=True)
            self.mounted = False
            os.rmdir(self.folder)
            if self.keep:
                shutil.rmtree(self.aside)
                held.rename(self.folder)
            else:
                shutil.copytree(held, self.aside, symlinks=True, dirs_exist_ok=True)
                shutil.rmtree(held)
                self.aside.rename(self.folder)
        elif self.aside.exists():
            os.rmdir(self.folder)
            self.aside.rename(self.folder)
