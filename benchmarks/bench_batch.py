"""The codec's list API against a Python loop: 200 clips of 0.5-3 s of real speech, ``codec.encode(clips, sr)`` and
``codec.decode(codes)`` (padding-aware batches) against ``[codec.encode(c, sr) for c in clips]`` and the decode
loop, same model, same run. Prints the time ratios and checks the codes are identical. Run from the repository
root::

    .venv/bin/python benchmarks/bench_batch.py                 # speech-8k, 8 kHz clips, 1 thread
    .venv/bin/python benchmarks/bench_batch.py --rate 16000 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _util import set_threads  # noqa: E402

from vqaudio.codec import load_codec  # noqa: E402

SPEECH = Path("/usr/share/asterisk/sounds/en")


def clips(n: int, rate: int) -> list[torch.Tensor]:
    g = np.random.default_rng(0)
    out = []
    for p in sorted(SPEECH.glob("*.wav")):
        x, sr = sf.read(str(p), dtype="float32")
        k = int(g.uniform(0.5, 3.0) * 8000)
        if sr == 8000 and x.ndim == 1 and len(x) >= k:
            c = torch.from_numpy(x[:k].copy())[None]
            out.append(c if rate == 8000 else AF.resample(c, 8000, rate))
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} clips found under {SPEECH}")


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="speech-8k")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--rate", type=int, default=8000, help="sample rate of the clips")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many, interleaved")
    args = ap.parse_args()
    set_threads(args.threads)
    warnings.simplefilter("ignore")  # the rate warning of 16 kHz clips
    codec = load_codec(args.model)
    items = clips(args.clips, args.rate)
    seconds = sum(c.shape[-1] for c in items) / args.rate
    many = codec.encode(items, args.rate)
    one = [codec.encode(c, args.rate) for c in items]
    same = all(torch.equal(a.codes, b.codes) for a, b in zip(many, one, strict=True))
    dec_many = codec.decode(many)
    dec_one = [codec.decode(c) for c in one]
    err = max(float((a[0] - b[0]).abs().max()) for a, b in zip(dec_many, dec_one, strict=True))
    t = {k: float("inf") for k in ("enc_list", "enc_loop", "dec_list", "dec_loop")}
    for _ in range(args.repeats):  # interleaved: both sides see the same load
        t["enc_list"] = min(t["enc_list"], best(lambda: codec.encode(items, args.rate), 1))
        t["enc_loop"] = min(t["enc_loop"], best(lambda: [codec.encode(c, args.rate) for c in items], 1))
        t["dec_list"] = min(t["dec_list"], best(lambda: codec.decode(many), 1))
        t["dec_loop"] = min(t["dec_loop"], best(lambda: [codec.decode(c) for c in one], 1))
    print(f"{args.clips} clips of 0.5-3 s ({seconds:.0f} s of audio) at {args.rate} Hz, {codec.name}, {args.threads} "
          f"thread(s), best of {args.repeats}")
    print(f"encode: list {t['enc_list']:.2f} s, loop {t['enc_loop']:.2f} s: loop / list = {t['enc_loop'] / t['enc_list']:.2f}"
          f"; identical codes: {same}")
    print(f"decode: list {t['dec_list']:.2f} s, loop {t['dec_loop']:.2f} s: loop / list = {t['dec_loop'] / t['dec_list']:.2f}"
          f"; max |difference| {err:.1e}")


if __name__ == "__main__":
    main()
