"""Speech quality of a codec next to Codec2 3200/2400 and Opus 6k on the same evaluation sets.

    .venv/bin/python benchmarks/bench_quality.py [--codec speech-8k] [--set NAME=DIR|MANIFEST ...] [--n-q 3,4]
                                                 [--postfilter on|off] [--json OUT.json]

Then the bar, per set: every vqaudio row is set against each Codec2 mode whose bitrate it does not exceed
(payload bits of the real ``.vqa`` files over the audio's duration; Codec2's real ``c2enc`` output),
and wins a metric only if it is strictly better there. The target is vqaudio at <= 3.2 kbit/s beating
Codec2 3200, and at <= 2.4 kbit/s beating Codec2 2400, on all three metrics, in every set.

Default sets: ``asterisk-heldout``, the asterisk recipe's held-out prompts (recipes/asterisk/conf/heldout.txt under
$ASTERISK, default /usr/share/asterisk/sounds), and, once ``recipes/speech8k/run.sh --stop-stage 1`` has built them,
``unseen-male`` and ``unseen-female``: whole voices that speech8k never trains on (recipes/speech8k/conf/voices.tsv),
silence-trimmed at 8 kHz. PESQ-NB (8 kHz), STOI and log-mel distance are computed by
:func:`vqaudio.report.evaluate`, the code behind ``vqaudio eval`` (same bitrate measurement, same baselines).
PESQ/STOI need the ``pesq``/``pystoi`` packages, the baselines ``c2enc``/``c2dec``/``opusenc``/``opusdec``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machines)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqaudio.cli_args import add_postfilter_flag, postfilter_choice  # noqa: E402
from vqaudio.codec import load_codec  # noqa: E402
from vqaudio.commands.eval import n_q_list  # noqa: E402
from vqaudio.errors import VQAudioError  # noqa: E402
from vqaudio.report import eval_files, evaluate  # noqa: E402

METRICS = ("pesq_nb", "stoi", "log_mel")
HEADERS = {"pesq_nb": "PESQ-NB ↑", "stoi": "STOI ↑", "log_mel": "log-mel ↓"}
HIGHER = {"pesq_nb": True, "stoi": True, "log_mel": False}
BAR = {"codec2-3200": 3200.0, "codec2-2400": 2400.0}  # the Codec2 modes to beat, with their bitrate limits


def bar_lines(systems: dict[str, dict]) -> list[str]:
    """One verdict per (Codec2 mode, the highest-rate vqaudio row within that mode's bitrate limit)."""
    codec_rows = sorted((s for s in systems.values() if s["system"] == "codec"), key=lambda s: s["bitrate"])
    lines = []
    for mode, limit in BAR.items():
        ref = systems.get(mode)
        fits = [s for s in codec_rows if s["bitrate"] <= limit]
        if ref is None or not fits:
            lines.append(f"bar {mode}: not evaluated ({'no ' + mode if ref is None else f'no vqaudio row <= {limit:.0f} bit/s'})")
            continue
        row = fits[-1]
        parts, wins = [], 0
        for m in METRICS:
            a, b = row["mean"][m], ref["mean"][m]
            win = a > b if HIGHER[m] else a < b
            wins += win
            ratio = a / b if b else float("nan")
            parts.append(f"{m} {a:.3f} vs {b:.3f} ({ratio:.2f}x, {'better' if win else 'worse'})")
        verdict = "MET" if wins == len(METRICS) else f"not met ({wins}/{len(METRICS)} metrics)"
        lines.append(f"bar vqaudio n_q={row['n_q']} ({row['bitrate']:.0f} bit/s) vs {mode} ({ref['bitrate']:.0f} bit/s): "
                     f"{verdict}: " + "; ".join(parts))
    return lines


def heldout_files(asterisk: Path) -> tuple[list[Path], list[str]]:
    """The asterisk recipe's held-out prompts (paths relative to ``asterisk``)."""
    names = [ln.strip() for ln in (ROOT / "recipes/asterisk/conf/heldout.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    files = [asterisk / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise VQAudioError(f"{len(missing)} held-out prompt(s) missing, e.g. {missing[0]}; install "
                           "asterisk-core-sounds-{en,es,fr,it}-wav or pass --data")
    return files, names


UNSEEN = ROOT / "recipes/speech8k/exp/full/data"


def default_sets() -> dict[str, str | None]:
    """Set name -> manifest (``None``: the asterisk held-out prompts; a missing unseen-voice list is skipped)."""
    sets: dict[str, str | None] = {"asterisk-heldout": None}
    for sex in ("male", "female"):
        manifest = UNSEEN / f"eval_unseen_{sex}.txt"
        if manifest.is_file() and manifest.stat().st_size:
            sets[f"unseen-{sex}"] = str(manifest)
        else:
            print(f"not run: unseen-{sex}: no {manifest} (build it: recipes/speech8k/run.sh --stop-stage 1)")
    return sets


def parse_sets(specs: list[str]) -> dict[str, str | None]:
    sets: dict[str, str | None] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise VQAudioError(f"--set {spec!r}: expected NAME=DIR|MANIFEST")
        sets[name] = path
    return sets


def print_set(name: str, codec, files: list[Path], result: dict) -> None:
    print(f"\n## {name}: {len(files)} files, codec {codec.name} ({codec.sha256[:16]}; {codec.sample_rate} Hz, "
          f"hop {codec.hop}, K {codec.codebook_size}, post-filter {'on' if codec.postfilter else 'off'})")
    print(f"{'system':<16} {'bit/s':>7} " + " ".join(f"{HEADERS[m]:>10}" for m in METRICS))
    for sys_name, s in sorted(result["systems"].items(), key=lambda kv: (kv[1]["system"] != "codec", kv[0])):
        print(f"{sys_name:<16} {s['bitrate']:7.0f} " + " ".join(f"{s['mean'][m]:10.3f}" for m in METRICS))
    for sys_name, why in result["skipped"].items():
        print(f"not run: {sys_name}: {why}")
    for line in bar_lines(result["systems"]):
        print(f"{name}: {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="speech-8k", help="codec name, checkpoint or experiment folder (default speech-8k)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=DIR|MANIFEST",
                    help="an evaluation set (repeatable; default: asterisk-heldout, unseen-male, unseen-female)")
    ap.add_argument("--data", help="one folder or manifest (same as --set data=PATH)")
    ap.add_argument("--n-q", help="quantiser levels of the codec, e.g. 3,4 or 1-4 (default: all levels, and one fewer)")
    add_postfilter_flag(ap, "the codec's formant post-filter (vqaudio/postfilter.py) on or off (default: as its config)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write every number here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    try:
        codec = load_codec(args.codec, postfilter=postfilter_choice(args))
        n_qs = n_q_list(args.n_q) if args.n_q else sorted({max(1, codec.n_q - 1), codec.n_q})
        sets = parse_sets(args.set + ([f"data={args.data}"] if args.data else [])) or default_sets()
        for name, spec in sets.items():
            files, names = eval_files(spec) if spec else heldout_files(
                Path(os.environ.get("ASTERISK", "/usr/share/asterisk/sounds")))
            result = evaluate(codec, files, names, n_qs=n_qs,
                              baselines=("codec2-3200", "codec2-2400", "opus-6k"), metrics=METRICS, keep=False)
            print_set(name, codec, files, result)
            results[name] = result
    except VQAudioError as err:
        print(f"bench_quality: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
