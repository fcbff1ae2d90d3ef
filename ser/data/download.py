"""Fetch a public corpus into `<root>/<name>`, verify its checksum, and extract it safely.

    ser-download ravdess --root data
    ser-download emodb --root data --sha256 <hex>     # pin the archive you expect

Safe extraction: members with absolute paths, `..` components or links are refused, the
unpacked size is bounded, and the corpus appears under its final name only when complete
(extracted into a temporary folder, then renamed), so an interrupted download leaves nothing
that looks usable.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import stat
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ser.data.corpora import load_emodb, load_ravdess
from ser.errors import ChecksumMismatch, DataError, SerError, UnsafeArchive, invalid_choice
from ser.io import atomic_dir, atomic_path, write_json


@dataclass(frozen=True)
class Source:
    url: str
    md5: str | None  # as published by the host; None when the host publishes none
    n_audio: int  # audio files the adapter must find after extraction
    strip: str = ""  # leading folder inside the archive to drop


SOURCES = {
    # Zenodo record 1188976 publishes this MD5 for the speech-only audio archive.
    "ravdess": Source("https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
                      md5="bc696df654c87fed845eb13823edef8a", n_audio=1440),
    # The EmoDB site publishes no checksum: the computed SHA-256 is printed and recorded in
    # SOURCE.json; pass --sha256 to insist on a specific archive.
    "emodb": Source("http://emodb.bilderbar.info/download/download.zip", md5=None, n_audio=535),
}
MAX_UNPACKED_BYTES = 8 << 30


def fetch(url: str, dest: Path, timeout: float = 60.0) -> dict:
    """Stream `url` to `dest`, hashing as it goes; returns md5 and sha256."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with atomic_path(dest) as part, urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as f:
        while block := response.read(1 << 20):
            f.write(block)
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def safe_extract(archive: Path, into: Path, strip: str = "") -> None:
    with zipfile.ZipFile(archive) as zf:
        total = 0
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or info.filename.startswith(("/", "\\")) or ":" in name.parts[0]:
                raise UnsafeArchive(f"{archive}: member {info.filename!r} would be written outside the target folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchive(f"{archive}: member {info.filename!r} is a symbolic link")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise UnsafeArchive(f"{archive}: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB")
        for info in zf.infolist():
            rel = PurePosixPath(info.filename)
            if strip and rel.parts and rel.parts[0] == strip:
                rel = PurePosixPath(*rel.parts[1:])
            if not rel.parts or info.is_dir():
                continue
            target = into.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def download(name: str, root: str | Path, url: str | None = None, md5: str | None = None,
             sha256: str | None = None, force: bool = False) -> Path:
    if name not in SOURCES:
        raise invalid_choice("corpus", name, sorted(SOURCES))
    source = SOURCES[name]
    root = Path(root)
    final = root / name
    if final.exists() and not force:
        print(f"{final} already exists; pass --force to replace it")
        return final
    root.mkdir(parents=True, exist_ok=True)
    expected_md5 = md5 or (source.md5 if url is None else None)
    # The corpus appears under its final name only once it is extracted and checked.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp, atomic_dir(final) as staged:
        archive = Path(tmp) / "archive.zip"
        print(f"downloading {url or source.url}")
        digests = fetch(url or source.url, archive)
        if expected_md5 and digests["md5"] != expected_md5.lower():
            raise ChecksumMismatch(f"{name}: MD5 {digests['md5']} != expected {expected_md5}; the download is corrupt or not the published archive")
        if sha256 and digests["sha256"] != sha256.lower():
            raise ChecksumMismatch(f"{name}: SHA-256 {digests['sha256']} != expected {sha256}")
        safe_extract(archive, staged, source.strip)
        corpus = (load_ravdess if name == "ravdess" else load_emodb)(staged)
        if len(corpus.clips) < source.n_audio and url is None:
            raise DataError(f"{name}: found {len(corpus.clips)} usable clips after extraction, expected {source.n_audio}")
        write_json(staged / "SOURCE.json", {"url": url or source.url, **digests, "verified": bool(expected_md5 or sha256),
                                            "clips": len(corpus.clips), "downloaded": time.strftime("%Y-%m-%d")})
    print(f"{name}: {len(corpus.clips)} clips in {final} (sha256 {digests['sha256']})")
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ser-download", description="Download and verify a public SER corpus.")
    ap.add_argument("corpus", choices=sorted(SOURCES))
    ap.add_argument("--root", default="data", help="data root (paths.data_root); the corpus lands in <root>/<corpus>")
    ap.add_argument("--url", help="a mirror of the archive (then pass --md5/--sha256 to verify it)")
    ap.add_argument("--md5")
    ap.add_argument("--sha256")
    ap.add_argument("--force", action="store_true", help="replace an existing copy")
    args = ap.parse_args(argv)
    try:
        download(args.corpus, args.root, args.url, args.md5, args.sha256, args.force)
    except (SerError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
