"""The large offline corpus of the ``gpu`` preset: every split's raw text in one verified folder (a *pack*).

A pack holds the texts of :func:`.data.raw_split_texts` (plays, the standard library's code and docstrings, Folio, KJV)
plus the ``.py`` sources of the installed packages (every ``site-packages``/``dist-packages`` folder of the
interpreter that builds it), so that a machine without those packages (the GPU machine: another interpreter,
other packages, no internet) trains on exactly the same text:

- package sources are read in sorted path order, files over ``MAX_FILE_BYTES`` or that do not parse are skipped,
  docstrings are removed (as for the standard library, so the ``docstrings`` domain stays zero-shot), and the
  result is **deduplicated by the SHA-256 of its content before the split** (a file identical to a standard-library
  file, or to another package's, is kept once, so no text sits on both sides of the split);
- a file is held out (the in-domain ``code`` evaluation) when the first byte of its content SHA-256 is < 26 (≈ 10%);
  the rest is appended to ``train/code``.

Layout of a pack folder: ``<split>.txt.xz`` per split (``train_plays``, ``train_code``, ``plays``, ``code``,
``folio``, ``bible``, ``docstrings``) and ``manifest.json``: every package source kept (path relative to its
``site-packages``, bytes, SHA-256 of the file, split), the duplicates dropped, and per split its characters and
the SHA-256 of its UTF-8 text; ``sha256`` (the pack's hash) is the SHA-256 of the canonical JSON of the per-split
hashes. :func:`verify_pack` recomputes every split's hash from the decompressed text and the pack's hash from
those: a pack that fails (torn, edited, other text) is refused, never silently rebuilt, since rebuilding on another
machine would give other text.

    python -m seednorm_experiments.lm.corpus_pack .gpu/corpus      # build here (a few minutes on 2 cores)
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..texts import split_docstrings
from .data import SPLITS, TextSource, raw_split_texts

__all__ = ["MAX_FILE_BYTES", "PACK_ENV", "build_pack", "default_pack_dir", "pack_source", "package_roots",
           "read_pack", "verify_pack"]

PACK_ENV = "SEEDNORM_CORPUS_PACK"
MAX_FILE_BYTES = 1_000_000  # generated tables and vendored bundles: not code anyone reads
_HELD_OUT_BELOW = 26  # first digest byte < 26 of 256: about 10% held out
_MANIFEST = "manifest.json"
_FORMAT = 1


def default_pack_dir() -> Path:
    """``$SEEDNORM_CORPUS_PACK`` when set, else ``<seednorm cache root>/lm-pack``."""
    from seednorm.ops.cpu import cache_root

    env = os.environ.get(PACK_ENV)
    return Path(env) if env else cache_root() / "lm-pack"


def package_roots() -> list[Path]:
    """This interpreter's package folders (site-packages, dist-packages), existing ones, without repeats."""
    found = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"]]
    out: list[Path] = []
    for p in found:
        path = Path(p).resolve()
        if path.is_dir() and path not in out:
            out.append(path)
    return out


def _file_name(split: str) -> str:
    return split.replace("/", "_") + ".txt.xz"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pack_hash(split_hashes: dict[str, str]) -> str:
    """The pack's hash: SHA-256 of the canonical JSON of ``{split: sha256 of its text}``."""
    return hashlib.sha256(json.dumps(split_hashes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _package_sources(roots: Sequence[Path], seen: set[str], max_files: int | None
                     ) -> tuple[list[dict], list[str], list[str], list[dict]]:
    """(kept file records, train texts, held-out texts, duplicate records) of the ``.py`` files under ``roots``."""
    kept: list[dict] = []
    dropped: list[dict] = []
    train: list[str] = []
    held: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if max_files is not None and len(kept) >= max_files:
                return kept, train, held, dropped
            rel = path.relative_to(root).as_posix()
            if "__pycache__" in rel.split("/") or not path.is_file():
                continue
            raw = path.read_bytes()
            if len(raw) > MAX_FILE_BYTES:
                continue
            try:
                code, _ = split_docstrings(raw.decode("utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
                continue
            record = {"root": str(root), "path": rel, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
            content = _digest(code)
            if content in seen:
                dropped.append(record)
                continue
            seen.add(content)
            held_out = bytes.fromhex(content[:2])[0] < _HELD_OUT_BELOW
            record["split"] = "code" if held_out else "train/code"
            (held if held_out else train).append(code)
            kept.append(record)
    return kept, train, held, dropped


def build_pack(out: Path, roots: Iterable[Path] | None = None, *, max_files: int | None = None,
               max_chars: int | None = None) -> str:
    """Write a pack into ``out``: the base texts of :func:`.data.raw_split_texts` (each split cut at ``max_chars``)
    plus the package sources under ``roots`` (default :func:`package_roots`; at most ``max_files``); returns its
    hash."""
    base = raw_split_texts(max_chars)
    seen = {_digest(t) for t in base["train/code"] + base["code"]}
    roots = [Path(r) for r in (package_roots() if roots is None else roots)]
    kept, train, held, dropped = _package_sources(roots, seen, max_files)
    texts = {k: "\n\n".join(v)[:max_chars] if max_chars else "\n\n".join(v) for k, v in base.items()}
    texts["train/code"] = "\n\n".join([texts["train/code"], *train])
    texts["code"] = "\n\n".join([texts["code"], *held])
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in SPLITS:
        text = texts[name]
        tmp = out / f".{_file_name(name)}.{os.getpid()}"
        tmp.write_bytes(lzma.compress(text.encode("utf-8"), preset=6))
        os.replace(tmp, out / _file_name(name))
        splits[name] = {"chars": len(text), "sha256": _digest(text)}
    digest = pack_hash({k: v["sha256"] for k, v in splits.items()})
    manifest = {"format": _FORMAT, "sha256": digest, "python": sys.version.split()[0], "max_chars": max_chars,
                "roots": [str(r) for r in roots], "splits": splits,
                "files": kept,
                "duplicates": dropped,
                "source_bytes": sum(r["bytes"] for r in kept)}
    tmp = out / f".{_MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=0))
    os.replace(tmp, out / _MANIFEST)
    return digest


def read_manifest(pack: Path) -> dict:
    return json.loads((pack / _MANIFEST).read_text())


def read_pack(pack: Path) -> tuple[dict[str, str], dict]:
    """(text per split, manifest) of a verified pack; ValueError naming what failed otherwise."""
    try:
        manifest = read_manifest(pack)
        texts = {name: lzma.decompress((pack / _file_name(name)).read_bytes()).decode("utf-8") for name in SPLITS}
    except (OSError, ValueError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise ValueError(f"corpus pack {pack} is unreadable ({type(err).__name__}: {err}); build it with "
                         f"python -m seednorm_experiments.lm.corpus_pack {pack}") from None
    bad = [n for n in SPLITS if _digest(texts[n]) != manifest["splits"].get(n, {}).get("sha256")]
    recorded = {n: manifest["splits"][n]["sha256"] for n in SPLITS if n in manifest["splits"]}
    if bad or pack_hash(recorded) != manifest.get("sha256"):
        raise ValueError(f"corpus pack {pack} fails its manifest (splits {bad or 'ok'}, pack hash "
                         f"{'ok' if not bad and pack_hash(recorded) == manifest.get('sha256') else 'differs'}); "
                         "rebuild it where it was built and carry it again")
    return texts, manifest


def pack_source(pack: Path) -> TextSource:
    """The pack as the texts of :func:`.data.load_corpus`, verified now (ValueError when it fails) and again
    whenever the texts are read; its hash names them."""
    manifest = read_pack(pack)[1]
    return TextSource(key=manifest["sha256"], read=lambda: read_pack(pack)[0],
                      info={"pack_sha256": manifest["sha256"], "pack_files": len(manifest["files"])})


def verify_pack(pack: Path) -> str:
    """The pack's hash after checking every split against the manifest (ValueError when it fails)."""
    return read_pack(pack)[1]["sha256"]


def main(argv: list[str] | None = None) -> int:
    """``python -m seednorm_experiments.lm.corpus_pack OUT``: build a pack from this interpreter's packages."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m seednorm_experiments.lm.corpus_pack",
                                description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, nargs="?", default=None, help=f"pack folder (default: ${PACK_ENV} or "
                   "<cache root>/lm-pack)")
    p.add_argument("--roots", type=Path, nargs="*", default=None, help="package folders (default: this "
                   "interpreter's site-packages)")
    p.add_argument("--max-files", type=int, default=None, help="at most this many package files (tests)")
    p.add_argument("--max-chars", type=int, default=None, help="cut every base split at this many characters (tests)")
    args = p.parse_args(argv)
    out = args.out or default_pack_dir()
    digest = build_pack(out, args.roots, max_files=args.max_files, max_chars=args.max_chars)
    m = read_manifest(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"corpus pack {out}: sha256 {digest}; {len(m['files'])} package files kept "
          f"({m['source_bytes'] / 1e6:.1f} MB), {len(m['duplicates'])} duplicates dropped; "
          + ", ".join(f"{k} {v['chars'] / 1e6:.1f}M chars" for k, v in m["splits"].items())
          + f"; {size / 2**20:.1f} MiB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
