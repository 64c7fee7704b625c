"""Speech quality of a codec next to Codec2 3200/2400 and Opus 6k on the same held-out files.

    .venv/bin/python benchmarks/bench_quality.py --codec recipes/asterisk/exp/full/vqvae \
        [--data DIR|MANIFEST] [--n-q N] [--json OUT.json]

Default data: the asterisk recipe's held-out prompts (recipes/asterisk/conf/heldout.txt under $ASTERISK,
default /usr/share/asterisk/sounds). PESQ-NB (8 kHz), STOI and log-mel distance are computed by
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

from vqaudio.codec import load_codec  # noqa: E402
from vqaudio.errors import VQAudioError  # noqa: E402
from vqaudio.report import eval_files, evaluate  # noqa: E402

METRICS = ("pesq_nb", "stoi", "log_mel")
HEADERS = {"pesq_nb": "PESQ-NB ↑", "stoi": "STOI ↑", "log_mel": "log-mel ↓"}


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", required=True, help="codec name, checkpoint or experiment folder")
    ap.add_argument("--data", help="folder or manifest (default: the asterisk held-out prompts)")
    ap.add_argument("--n-q", type=int, help="quantiser levels of the codec (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write every number here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        codec = load_codec(args.codec)
        files, names = eval_files(args.data) if args.data else heldout_files(
            Path(os.environ.get("ASTERISK", "/usr/share/asterisk/sounds")))
        result = evaluate(codec, files, names, n_qs=[args.n_q or codec.n_q],
                          baselines=("codec2-3200", "codec2-2400", "opus-6k"), metrics=METRICS, keep=False)
    except VQAudioError as err:
        print(f"bench_quality: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(files)} files, codec {codec.name} ({codec.sample_rate} Hz, hop {codec.hop}, K {codec.codebook_size})")
    print(f"{'system':<16} {'bit/s':>7} " + " ".join(f"{HEADERS[m]:>10}" for m in METRICS))
    for name, s in sorted(result["systems"].items(), key=lambda kv: kv[1]["system"] != "codec"):
        print(f"{name:<16} {s['bitrate']:7.0f} " + " ".join(f"{s['mean'][m]:10.3f}" for m in METRICS))
    for name, why in result["skipped"].items():
        print(f"not run: {name}: {why}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
