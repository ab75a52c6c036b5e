"""Optional extra domains from Debian packages: Jane Austen (austen), the King James Bible (kjv), Python docs (pydocs).

Best effort: a package already installed is read in place; otherwise it is fetched with `apt-get download`
and unpacked with `dpkg -x` into a temporary folder (never installed). Anything missing raises one
`DataError` line saying what; `corpora.py` logs it and goes on without that extra.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from k1.data.builtin import RECIPE_VERSION, Collection, Recipe
from k1.data.documents import Document
from k1.data.markup import strip_rst, unwrap_paragraphs
from k1.errors import DataError

_AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
_KJV_DATA = "usr/lib/bible.data"
_PYDOCS_SOURCES = "usr/share/doc/python3.11/html/_sources"
_CHAPTER = re.compile(r"^(?:CHAPTER|Chapter) [IVXLC\d]+\.?\s*$", re.MULTILINE)


def with_debian_files(name: str, packages: list[str], marker: str, read: Callable[[Path], Collection]) -> Collection:
    """Run `read(root)` on the package files: `/` if `marker` is installed, else a temporary unpack."""
    if (Path("/") / marker).exists():
        return read(Path("/"))
    missing = [tool for tool in ("apt-get", "dpkg") if shutil.which(tool) is None]
    if missing:
        raise DataError(f"extra {name!r} needs Debian's {' and '.join(missing)} to fetch {' '.join(packages)}")
    with tempfile.TemporaryDirectory(prefix=f"k1-{name}-") as tmp:
        tmpdir = Path(tmp)
        _run(name, ["apt-get", "download", *packages], tmpdir)
        for deb in sorted(tmpdir.glob("*.deb")):
            _run(name, ["dpkg", "-x", str(deb), str(tmpdir / "root")], tmpdir)
        if not (tmpdir / "root" / marker).exists():
            raise DataError(f"extra {name!r}: {marker} is not in the Debian packages {' '.join(packages)}")
        return read(tmpdir / "root")


def _run(name: str, cmd: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"extra {name!r}: `{' '.join(cmd)}` could not run ({e})") from e
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DataError(f"extra {name!r}: `{' '.join(cmd)}` failed ({last}); check the network and apt sources")
    return done.stdout


# --- Jane Austen: character vectors in janeaustenr's R lazy-load database ----------------------------


def r_character_vectors(rdb: bytes) -> Iterator[list[str]]:
    """Read every object of an R `.rdb` file that is a character vector (each: 4-byte size + zlib data).

    R's XDR serialisation of a STRSXP is: header, then flags (type 16), length, and per element flags
    plus a byte length (-1 for NA) and the UTF-8 bytes. That is all janeaustenr's data holds.
    """
    pos = 0
    while pos + 4 < len(rdb):
        inflate = zlib.decompressobj()
        raw = inflate.decompress(rdb[pos + 4 :])
        pos = len(rdb) - len(inflate.unused_data)
        if raw[:2] != b"X\n":
            continue
        off = 14  # "X\n", format version, writer version, minimal reader version
        if struct.unpack(">i", raw[2:6])[0] == 3:
            off += 4 + struct.unpack(">i", raw[14:18])[0]  # native encoding name
        flags, n = struct.unpack(">ii", raw[off : off + 8])
        if flags & 0xFF != 16:
            continue
        off += 8
        strings = []
        for _ in range(n):
            length = struct.unpack(">i", raw[off + 4 : off + 8])[0]
            off += 8
            if length >= 0:
                strings.append(raw[off : off + length].decode("utf-8", errors="replace"))
                off += length
        yield strings


def _read_austen(root: Path) -> Collection:
    docs = []
    for lines in r_character_vectors((root / _AUSTEN_DATA).read_bytes()):
        title = next((line.strip() for line in lines if line.strip()), "untitled").title()
        for i, chapter in enumerate(_CHAPTER.split("\n".join(lines))):
            docs.append(Document(f"austen:{title}:{i}", unwrap_paragraphs(chapter)))
    source = {"name": "Jane Austen's six novels (R package janeaustenr, Debian r-cran-janeaustenr)",
              "licence": "Public domain (texts); MIT (janeaustenr)", "path": _AUSTEN_DATA, "n_documents": len(docs)}
    return Collection(docs, [source])


# --- King James Bible: the `bible` program prints its compressed data file -----------------------------


def _read_kjv(root: Path) -> Collection:
    binary = root / "usr/bin/bible"
    text = _run("kjv", [str(binary), "-l", "100000", "-p", str(root / "usr/lib"), "Gen1:1-Rev22:21"], root)
    docs, chapter, verses = [], None, []
    for line in text.splitlines() + [""]:
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            verses.append(verse.group(1).strip())
        elif line.strip():
            if chapter and verses:
                docs.append(Document(f"kjv:{chapter}", "\n".join([chapter, *verses])))
            chapter, verses = line.strip(), []
    if chapter and verses:
        docs.append(Document(f"kjv:{chapter}", "\n".join([chapter, *verses])))
    source = {"name": "King James Bible, one document per chapter (Debian bible-kjv)",
              "licence": "Public domain", "path": _KJV_DATA, "n_documents": len(docs)}
    return Collection(docs, [source])


# --- Python documentation: reStructuredText sources of python3.11-doc ----------------------------------


def _read_pydocs(root: Path) -> Collection:
    base = root / _PYDOCS_SOURCES
    files = sorted(base.rglob("*.rst.txt"))
    docs = [Document(f"pydocs:{f.relative_to(base).as_posix()}", strip_rst(f.read_text(errors="replace")))
            for f in files]
    source = {"name": "Python 3.11 documentation sources (Debian python3.11-doc)",
              "licence": "PSF-2.0", "path": _PYDOCS_SOURCES, "n_documents": len(docs)}
    return Collection(docs, [source])


def _recipe(name: str, description: str, packages: list[str], marker: str, read: Callable) -> Recipe:
    return Recipe(
        name,
        description,
        fingerprint=lambda: {"recipe": RECIPE_VERSION, "debian": packages},
        collect=lambda: with_debian_files(name, packages, marker, read),
    )


EXTRA_RECIPES: dict[str, Recipe] = {
    "austen": _recipe("austen", "Jane Austen's novels", ["r-cran-janeaustenr"], _AUSTEN_DATA, _read_austen),
    "kjv": _recipe("kjv", "King James Bible", ["bible-kjv", "bible-kjv-text"], _KJV_DATA, _read_kjv),
    "pydocs": _recipe("pydocs", "Python 3.11 docs", ["python3.11-doc"], _PYDOCS_SOURCES, _read_pydocs),
}
