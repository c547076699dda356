"""Reading uploaded zip archives safely: one entry at a time, never the whole archive in memory.

Entries with absolute or ``..`` paths, symlinks, nested archives and encrypted entries are
reported as rejected, not extracted; a declared or actual size over the limit stops that entry.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".lz"}
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")
JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db")


@dataclass
class Entry:
    name: str
    info: zipfile.ZipInfo | None
    error: str | None = None
    code: str | None = None


def is_zip(fh: IO[bytes]) -> bool:
    position = fh.tell()
    head = fh.read(4)
    fh.seek(position)
    return head == b"PK\x03\x04"


def looks_like_archive(name: str, head: bytes) -> bool:
    return PurePosixPath(name.lower()).suffix in ARCHIVE_SUFFIXES or head.startswith(ARCHIVE_MAGIC)


def _unsafe_path(name: str) -> bool:
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return True
    return any(part == ".." for part in normalised.split("/"))


def entries(archive: zipfile.ZipFile, *, max_entries: int, max_entry_bytes: int) -> Iterator[Entry]:
    count = 0
    for info in archive.infolist():
        name = info.filename
        if (
            info.is_dir()
            or any(j in name for j in JUNK)
            or PurePosixPath(name).name.startswith("._")
        ):
            continue
        count += 1
        if count > max_entries:
            yield Entry(name, None, f"The archive has more than {max_entries} files; the rest were "
                        "not read.", "too_many_files")  # fmt: skip
            return
        if _unsafe_path(name):
            yield Entry(
                name, None, "Unsafe path in the archive (absolute or with '..').", "unsafe_path"
            )
        elif stat.S_ISLNK(info.external_attr >> 16):
            yield Entry(name, None, "Symbolic links are not accepted.", "symlink")
        elif info.flag_bits & 0x1:
            yield Entry(name, None, "Encrypted archive entries are not accepted.", "encrypted")
        elif PurePosixPath(name.lower()).suffix in ARCHIVE_SUFFIXES:
            yield Entry(name, None, "Archives inside archives are not accepted.", "nested_archive")
        elif info.file_size > max_entry_bytes:
            yield Entry(name, None, f"Larger than the {max_entry_bytes:,} bytes allowed per image.",
                        "file_too_large")  # fmt: skip
        else:
            yield Entry(name, info)
