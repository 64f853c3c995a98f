"""Files that hold health data or keys are the service user's alone, whatever the umask.

Under systemd the unit's ``UMask=0077`` and ``StateDirectoryMode=0700`` already see to it; run by
hand, from a shell whose umask is 022 (or 000), the state directory would be world-readable and
so would the SQLite database (SQLite creates it 0644, and its WAL and SHM files with the
database's own mode). So syncd creates its directories 0700 and the database and key files
0600 from the first byte (``os.open`` with the mode, never a chmod after the fact), and takes
group and other permissions off ones that already exist, when they are its own, saying so.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of a database file, created with the database's own mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """``path`` exists as a directory only its owner can enter (parents are created as the
    umask says: they are not syncd's to decide)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # another process made it meanwhile; checked below like any other
        else:
            path.chmod(DIR_MODE)  # the umask may have taken owner bits too
            return
    tighten(path)


def private_file(path: Path) -> None:
    """``path`` exists as a file only its owner can read: created 0600, or tightened."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` that is 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(data)


def tighten_sqlite(database: Path) -> None:
    """The database file and whichever of its WAL/SHM/journal files exist: 0600."""
    for suffix in ("", *SQLITE_COMPANIONS):
        candidate = database.with_name(database.name + suffix)
        if candidate.exists():
            tighten(candidate)


def tighten(path: Path) -> None:
    """Take group and other permissions off ``path`` if it has any and is ours."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if info.st_uid != os.geteuid():
        log.warning(
            "%s is readable by others (mode %o) and not owned by this user: restrict it "
            "(chmod go-rwx) or give it to the user syncd runs as",
            path,
            mode,
        )
        return
    if stat.S_ISDIR(info.st_mode) and mode & stat.S_ISVTX:
        # A shared directory such as /tmp: not syncd's to close. Its files are still private.
        log.warning("%s is a shared directory; keep syncd's state in a directory of its own", path)
        return
    path.chmod(mode & ~0o077)
    log.warning("%s was readable by others (mode %o); now %o", path, mode, mode & ~0o077)
