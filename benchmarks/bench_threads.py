"""CPU thread defaults of the command line: training steps/s and encoding x realtime with torch's own defaults
(OpenMP threads spin while they wait) and with the CLI's (``OMP_WAIT_POLICY=PASSIVE``, threads = usable
CPUs: :mod:`vqaudio.threads`), each alone and next to a competing busy process (``python -c 'while True:
pass'``, unpinned). Every run is a fresh process; the timed part excludes start-up (torch import, model load).

    .venv/bin/python benchmarks/bench_threads.py --minutes 5 --steps 12      # ~5 min on 2 cores

"torch defaults" runs the same CLI with torch imported first, which makes it keep torch's own settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH = Path("/usr/share/asterisk/sounds/en")

# Runs one CLI command in this process and prints the seconds it took (after imports and thread setup).
RUNNER = """
import sys, time
mode, argv = sys.argv[1], sys.argv[2:]
if mode == "cli":
    from vqaudio.threads import apply_cli_defaults
    apply_cli_defaults()
import torch
from vqaudio.cli import main
t0 = time.perf_counter()
rc = main(argv)
print(f"SECONDS {time.perf_counter() - t0:.3f} THREADS {torch.get_num_threads()}", file=sys.stderr)
sys.exit(rc)
"""


@contextlib.contextmanager
def busy(on: bool):
    """A competing process that keeps one core busy."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        time.sleep(0.5 if on else 0)
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def run(mode: str, argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", RUNNER, mode, *argv], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {out.returncode}\n{out.stderr[-2000:]}")
    return out.stderr


def make_audio(path: Path, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    parts = [sf.read(str(p), dtype="float32")[0] for p in sorted(SPEECH.glob("*.wav"))[:300]]
    parts = [p for p in parts if p.ndim == 1]
    need, i = int(seconds * 8000), 0
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_16") as f:
        while need > 0:
            block = parts[i % len(parts)][:need] if parts else np.zeros(min(need, 8000), np.float32)
            f.write(block)
            need, i = need - len(block), i + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the encoded file")
    ap.add_argument("--steps", type=int, default=12, help="training steps (steps/s over the last half)")
    ap.add_argument("--config", default=str(ROOT / "recipes/asterisk/conf/vqvae.json"), help="training config")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_audio(tmp / "long.wav", args.minutes * 60)
        data = tmp / "data"
        data.mkdir()
        for p in sorted(SPEECH.glob("*.wav"))[:64]:
            (data / p.name).symlink_to(p)
        half = max(1, args.steps // 2)
        rows = []
        for competitor in (False, True):
            for mode in ("torch", "cli"):
                with busy(competitor):
                    err = run(mode, ["encode", str(tmp / "long.wav"), "-o", str(tmp / f"{mode}{competitor}.vqa"),
                                     "--no-progress", "--device", "cpu"])
                    enc = float(re.search(r"SECONDS ([\d.]+)", err).group(1))
                    threads = re.search(r"THREADS (\d+)", err).group(1)
                    err = run(mode, ["train", "--data", str(data), "--exp", str(tmp / f"exp-{mode}{competitor}"),
                                     "--config", args.config, "--steps", str(args.steps), "--log-every", str(half),
                                     "--valid-every", "100000", "--checkpoint-every", "100000", "--no-progress",
                                     "--no-plots", "--device", "cpu"])
                    sps = float(re.search(r"\(([\d.]+) steps/s\)", err).group(1))
                rows.append((competitor, mode, threads, args.minutes * 60 / enc, sps))
                print(f"busy={competitor!s:5} defaults={mode:5} threads={threads}  encode {rows[-1][3]:7.1f} x realtime"
                      f"  train {sps:.3f} steps/s", flush=True)
    print("\nratios, CLI defaults over torch defaults (above 1: the CLI's are faster)")
    for competitor in (False, True):
        t, c = (r for r in rows if r[0] == competitor)
        print(f"{'with' if competitor else 'without'} a busy process: encode {c[3] / t[3]:.2f}x, train {c[4] / t[4]:.2f}x")


if __name__ == "__main__":
    main()
