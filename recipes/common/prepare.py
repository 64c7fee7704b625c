#!/usr/bin/env python3
"""Recipe stage 1: list a corpus in its own directory layout and write the data folder the CLI reads.

    prepare.py LAYOUT --root DIR --out EXP/data [--heldout-list F | --heldout-fraction P] [--labels]
               [--max-train N] [--max-heldout N] [--var NAME]

Writes (each file atomically; the trees are rebuilt in a temporary folder and renamed into place):

- ``OUT/train.txt``, ``OUT/heldout.txt``: manifests (absolute paths) for ``vqaudio train`` / ``vqaudio eval``;
- ``OUT/train/``: the training files as symlinks, ``OUT/train/<label>/<name>`` with ``--labels`` (the label
  is the speaker, language, word or class), for ``vqaudio encode`` whose mirrored ``.vqa`` tree is what
  ``vqaudio train-prior --labels`` reads;
- ``OUT/info.json``: counts and labels.

Layouts: ``asterisk`` (ROOT/<voice>/**.wav, e.g. ROOT/en_US_f_Allison; ``--subsets`` lists the voice folders), ``vctk`` (ROOT/wav48_silence_trimmed/<spk>/<spk>_<utt>_mic1.flac,
or VCTK 0.80's ROOT/wav48/<spk>/*.wav), ``ljspeech`` (ROOT/metadata.csv + ROOT/wavs/<id>.wav), ``librispeech``
(ROOT/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac with a ``.trans.txt`` per chapter; ``dev-clean``
is the held-out part when present), ``speechcommands`` (ROOT/<word>/<hash>_nohash_<n>.wav; ``testing_list.txt``
is the held-out part when present), ``custom`` (any folder of audio; label = first sub-folder), ``ucr``
(``--root NAME``: an aeon-shipped UCR/UEA set, exported to ``.npy`` series; TEST split held out; label = class).
Only the standard library is needed, except ``ucr`` (numpy, aeon). A missing or mis-laid corpus exits 2 with
one line naming ``--var`` (the recipe's ``db.sh`` variable) to fill.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from voices import ASTERISK_CORE, core_package

AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}
Item = tuple[Path, str, str]  # (file, name unique in the corpus, label)


class PrepError(Exception):
    """The corpus is missing or not laid out as expected (printed as one line, exit status 2).

    ``where=True``: the corpus location may be wrong, so the message names the db.sh variable to set.
    """

    def __init__(self, message: str, where: bool = True) -> None:
        super().__init__(message)
        self.where = where


def _audio(root: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.suffix.lower() in AUDIO and p.is_file()
                  and not any(s.startswith(".") for s in p.relative_to(root).parts))


def _need(items: list[Item], root: Path, what: str) -> list[Item]:
    if not items:
        raise PrepError(f"{root}: no {what} found")
    return items


def asterisk(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    """Each voice from its own folder (``en_US_f_Allison``, ...), never the ``<lang>`` links; label = language."""
    folders = args.subsets.split(",") if args.subsets else [v for v, _ in ASTERISK_CORE]
    items = []
    for voice in folders:
        base = root / voice
        if not base.is_dir():
            hint = f" (apt-get install {core_package(voice)})" if voice in dict(ASTERISK_CORE) else ""
            raise PrepError(f"{base}: voice folder missing{hint}")
        items += [(p, f"{voice}/{p.relative_to(base).as_posix()}", voice.split("_")[0]) for p in _audio(base, "*.wav")
                  if "silence" not in p.relative_to(base).parts]
    return _need(items, root, "prompts (<voice>/*.wav)"), None


def vctk(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    base = root / "wav48_silence_trimmed"
    if base.is_dir():
        files = [p for p in _audio(base, "*_mic1.*")]
    else:
        base = root / "wav48"
        files = _audio(base, "p*.wav") if base.is_dir() else []
    items = [(p, p.relative_to(base).as_posix(), p.parent.name) for p in files]
    return _need(items, root, "wav48_silence_trimmed/<speaker>/<speaker>_<utt>_mic1.flac files"), None


def ljspeech(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise PrepError(f"{root}: no metadata.csv (LJSpeech-1.1 layout: metadata.csv + wavs/)")
    ids = [ln.split("|", 1)[0] for ln in meta.read_text(encoding="utf-8").splitlines() if ln.strip()]
    missing = [i for i in ids if not (root / "wavs" / f"{i}.wav").is_file()]
    if missing:
        raise PrepError(f"{root}: metadata.csv lists {len(missing)} missing wavs/<id>.wav, e.g. {missing[0]}")
    return _need([(root / "wavs" / f"{i}.wav", f"{i}.wav", "lj") for i in ids], root, "utterances"), None


def librispeech(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    subsets = args.subsets.split(",") if args.subsets else sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p.name.startswith(("train-", "dev-", "test-"))))
    items: list[Item] = []
    for sub in subsets:
        for trans in sorted((root / sub).glob("*/*/*.trans.txt")):
            for ln in trans.read_text(encoding="utf-8").splitlines():
                uid = ln.split(" ", 1)[0]
                f = trans.parent / f"{uid}.flac"
                if uid and not f.is_file():
                    raise PrepError(f"{trans}: lists {uid} but {f.name} is missing")
                if uid:
                    items.append((f, f"{sub}/{uid}.flac", uid.split("-")[0]))
    held = {n for _, n, _ in items if n.startswith("dev-clean/")} or None
    return _need(items, root, "<subset>/<speaker>/<chapter>/*.trans.txt transcripts"), held


def speechcommands(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    words = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    items = [(p, f"{w.name}/{p.name}", w.name) for w in words for p in sorted(w.glob("*_nohash_*.wav"))]
    test = root / "testing_list.txt"
    held = set(test.read_text().split()) if test.is_file() else None
    return _need(items, root, "<word>/<hash>_nohash_<n>.wav clips"), held


def custom(root: Path, args: argparse.Namespace) -> tuple[list[Item], set[str] | None]:
    files = _audio(root)
    items = [(p, p.relative_to(root).as_posix(), p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1
              else "_") for p in files]
    return _need(items, root, "audio files"), None


def ucr(name: str, out: Path) -> tuple[list[Item], set[str]]:
    """Export the aeon data set ``name`` (train and test) to ``out/series/<split>_<i>.npy`` (rows = time)."""
    import numpy as np

    try:
        import aeon.datasets
        from aeon.datasets import load_classification
    except ImportError:
        raise PrepError("the ucr recipe needs the 'aeon' package in $PYTHON's environment") from None
    if not (Path(aeon.datasets.__file__).parent / "data" / name / f"{name}_TRAIN.ts").is_file():
        raise PrepError(f"aeon does not ship the data set {name!r} (offline); pick e.g. GunPoint, ArrowHead, "
                        "BasicMotions, JapaneseVowels")
    series = out / "series"
    series.mkdir(parents=True, exist_ok=True)
    items, held = [], set()
    for split in ("train", "test"):
        X, y = load_classification(name, split=split)
        for i, (x, label) in enumerate(zip(X, y, strict=True)):
            f = series / f"{split}_{i:05d}.npy"
            if not f.is_file():
                with tempfile.NamedTemporaryFile(dir=series, suffix=".npy", delete=False) as tmp:
                    np.save(tmp, np.asarray(x, dtype=np.float32).T, allow_pickle=False)
                os.replace(tmp.name, f)
            items.append((f, f"{name}_{split}_{i:05d}.npy", f"class{label}"))
            if split == "test":
                held.add(items[-1][1])
    return items, held


LAYOUTS: dict[str, Callable[[Path, argparse.Namespace], tuple[list[Item], set[str] | None]]] = {
    "asterisk": asterisk, "vctk": vctk, "ljspeech": ljspeech, "librispeech": librispeech,
    "speechcommands": speechcommands, "custom": custom}


def _hash01(name: str) -> float:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") / 2**64


def _spread(items: list[Item], n: int | None) -> list[Item]:
    """At most ``n`` items, round-robin over labels (sorted), so small subsets keep every label they can."""
    if n is None or len(items) <= n:
        return items
    by: dict[str, list[Item]] = {}
    for it in items:
        by.setdefault(it[2], []).append(it)
    out, k = [], 0
    while len(out) < n:
        out += [v[k] for _, v in sorted(by.items()) if k < len(v)][: n - len(out)]
        k += 1
    return sorted(out, key=lambda it: it[1])


def _write(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("layout", choices=[*LAYOUTS, "ucr"])
    p.add_argument("--root", required=True, help="corpus folder (ucr: the aeon data set name)")
    p.add_argument("--out", required=True, type=Path, help="data folder to write (EXP/data)")
    p.add_argument("--heldout-list", type=Path, help="names (one per line) to hold out for evaluation")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="else hold out this share by name hash")
    p.add_argument("--subsets", help="comma-separated sub-folders (asterisk voice folders, LibriSpeech subsets)")
    p.add_argument("--labels", action="store_true", help="label sub-folders in OUT/train (for a conditioned prior)")
    p.add_argument("--max-train", type=int, help="at most N training files (spread over labels)")
    p.add_argument("--max-heldout", type=int, help="at most N held-out files")
    p.add_argument("--var", default="the corpus path", help="db.sh variable named in error messages")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.layout == "ucr":
            items, held = ucr(args.root, out)
        else:
            root = Path(args.root).expanduser()
            if not args.root or not root.is_dir():
                raise PrepError(f"{args.root or '(empty)'}: corpus folder does not exist")
            items, held = LAYOUTS[args.layout](root.resolve(), args)
        if args.heldout_list:
            held = {ln.strip() for ln in args.heldout_list.read_text().splitlines() if ln.strip() and ln[0] != "#"}
            unknown = sorted(held - {n for _, n, _ in items})
            if unknown:
                raise PrepError(f"{args.heldout_list}: {len(unknown)} held-out name(s) not in the corpus, e.g. {unknown[0]} "
                                "(a held-out list names files of the corpus as listed, <voice or sub-folder>/<file>)",
                                where=False)
        elif held is None:
            held = {n for _, n, _ in items if _hash01(n) < args.heldout_fraction} or {items[-1][1]}
    except PrepError as err:
        where = f"; set {args.var} (recipe db.sh or environment)" if err.where else ""
        print(f"prepare.py {args.layout}: error: {err}{where}", file=sys.stderr)
        return 2
    test = [it for it in items if it[1] in held][: args.max_heldout]
    train = _spread([it for it in items if it[1] not in held], args.max_train)
    tree = out / "train"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".train."))
    for f, name, label in train:
        link = tmp / (label if args.labels else "") / name.replace("/", "__")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f.resolve())
    if tree.exists():
        shutil.rmtree(tree)
    os.replace(tmp, tree)
    _write(out / "train.txt", "".join(f"{f.resolve()}\n" for f, _, _ in train))
    _write(out / "heldout.txt", "".join(f"{f.resolve()}\n" for f, _, _ in test))
    labels = sorted({lab for _, _, lab in train})
    _write(out / "info.json", json.dumps({"layout": args.layout, "root": str(args.root), "train": len(train),
                                          "heldout": len(test), "labels": labels if args.labels else []}, indent=1))
    print(f"prepare.py {args.layout}: {len(train)} training and {len(test)} held-out file(s)"
          + (f", {len(labels)} labels" if args.labels else "") + f" in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
