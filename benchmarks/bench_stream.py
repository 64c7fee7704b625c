"""Real-time streaming (vqaudio/streaming.py): speed, per-push time, latency through the pipe, and memory.

1. Real-time factor of streaming encode and decode with ``--push-ms`` pushes (default 20 ms) at batch 1, against the
   offline path (``Codec.encode`` / ``Codec.decode``) on the same audio, in the same run. Target: >= 20x each way.
2. Per-push time: median and p99 against the push's own duration (the real-time budget).
3. End-to-end latency through ``vqaudio encode - -o - --stream --rate 8000 | vqaudio decode - -o - --stream``: raw
   PCM written at real-time pace in 20 ms pieces, each output sample's arrival time minus the time its input sample
   was written, against ``codec.latency``.
4. Memory over a long stream (``--memory-minutes``, default 60, pushed in 1 s pieces, faster than real time): the
   RSS after each simulated minute; it must stay flat.

Run from the repository root: ``.venv/bin/python benchmarks/bench_stream.py`` (``--skip-pipe``, ``--memory-minutes 0``
to leave parts out). The machine's load changes absolute figures; the ratios against the offline path hold better.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _util import set_threads  # noqa: E402

from vqaudio.codec import load_codec  # noqa: E402

SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ROOT = Path(__file__).resolve().parents[1]


def speech(seconds: float, sr: int = 8000) -> torch.Tensor:
    """``seconds`` of asterisk prompts tiled (noise without them): float32 ``[1, T]``."""
    parts = [sf.read(str(p), dtype="float32")[0] for p in sorted(SPEECH.glob("*.wav"))[:200]] if SPEECH.is_dir() else []
    parts = [p for p in parts if p.ndim == 1] or [np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32)]
    x = np.concatenate(parts)
    x = np.tile(x, int(seconds * sr) // len(x) + 1)[: int(seconds * sr)]
    return torch.from_numpy(x)[None]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def speed(codec, x: torch.Tensor, push: int) -> dict:
    """Offline and streaming encode/decode of ``x`` (``push`` samples or ``push // hop`` frames per push)."""
    secs = x.shape[-1] / codec.sample_rate
    t0 = time.perf_counter()
    codes = codec.encode(x, codec.sample_rate)
    off_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    codec.decode(codes, "model")
    off_dec = time.perf_counter() - t0
    enc, enc_t = codec.stream_encoder(), []
    for i in range(0, x.shape[-1], push):
        t0 = time.perf_counter()
        enc.push(x[:, i : i + push])
        enc_t.append(time.perf_counter() - t0)
    enc.flush()
    frames = max(1, round(push / codec.hop))  # codes per decode push: the same 20 ms
    dec, dec_t, c = codec.stream_decoder(), [], codes.codes
    for i in range(0, c.shape[-1], frames):
        t0 = time.perf_counter()
        dec.push(c[..., i : i + frames])
        dec_t.append(time.perf_counter() - t0)
    dec.flush()
    return {"seconds": secs, "off_enc": secs / off_enc, "off_dec": secs / off_dec,
            "enc": secs / sum(enc_t), "dec": secs / sum(dec_t), "enc_t": enc_t, "dec_t": dec_t,
            "dec_push_ms": 1000 * frames * codec.hop / codec.sample_rate}


def pipe_latency(codec, seconds: float, threads: int) -> list[float]:
    """Seconds from writing each 20 ms piece of input to reading its last decoded sample, through the CLI pipe."""
    py = shlex.quote(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = (f"{py} -m vqaudio encode - -o - --stream --rate 8000 | {py} -m vqaudio decode - -o - --stream")
    proc = subprocess.Popen(cmd, shell=True, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    x = (speech(seconds + 2)[0].numpy() * 32767).astype("<i2")
    piece = codec.sample_rate // 50
    arrivals: list[tuple[float, int]] = []

    def reader():
        n = -44  # the WAV header
        while chunk := proc.stdout.read1(1 << 16):
            n += len(chunk)
            arrivals.append((time.monotonic(), n // 2))

    t = threading.Thread(target=reader)
    t.start()
    proc.stdin.write(x[:piece].tobytes())  # the first piece starts the processes; wait for them to be up
    proc.stdin.flush()
    while not arrivals:
        time.sleep(0.01)
    written = []
    start = time.monotonic()
    for k, i in enumerate(range(piece, len(x), piece)):
        while time.monotonic() < start + k * 0.02:
            time.sleep(0.001)
        proc.stdin.write(x[i : i + piece].tobytes())
        proc.stdin.flush()
        written.append((time.monotonic(), i + piece))
    proc.stdin.close()
    t.join()
    proc.wait()
    lat = []
    for when, upto in written[: int(seconds * 50)]:
        out = next((a for a, n in arrivals if n >= upto), None)
        if out is not None:
            lat.append(out - when)
    return lat


def memory(codec, minutes: int) -> list[float]:
    """RSS (MiB) after each simulated minute of a stream pushed in 1 s pieces through encoder and decoder."""
    x = speech(60)
    enc, dec, rss = codec.stream_encoder(), codec.stream_decoder(), []
    sr = codec.sample_rate
    for _ in range(minutes):
        for i in range(0, x.shape[-1], sr):
            dec.push(enc.push(x[:, i : i + sr]))
        rss.append(rss_mib())
    return rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="speech-8k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio for the speed test")
    ap.add_argument("--push-ms", type=float, default=20.0)
    ap.add_argument("--pipe-seconds", type=float, default=10.0)
    ap.add_argument("--skip-pipe", action="store_true")
    ap.add_argument("--memory-minutes", type=int, default=60)
    args = ap.parse_args()
    set_threads(args.threads)
    codec = load_codec(args.model)
    lat = codec.latency
    print(f"model {codec.name}: {codec.sample_rate} Hz, hop {codec.hop}; encoder and decoder layer by layer; "
          f"latency {lat.samples} samples = {lat.ms:.2f} ms (encoder {lat.encoder} samples + decoder {lat.decoder} frames)")
    x = speech(args.seconds)
    codec.encode(x[:, :8000], 8000)  # warm-up
    push = round(args.push_ms * codec.sample_rate / 1000)
    s = speed(codec, x, push)
    print(f"{args.seconds:g} s of speech, {args.threads} threads, batch 1, {args.push_ms:g} ms pushes "
          f"(decode: {s['dec_push_ms']:.1f} ms of codes a push)")
    print(f"  encode: offline {s['off_enc']:7.1f} x realtime, streaming {s['enc']:6.1f} x "
          f"({s['enc'] / s['off_enc']:.2f} of offline; target >= 20x)")
    print(f"  decode: offline {s['off_dec']:7.1f} x realtime, streaming {s['dec']:6.1f} x "
          f"({s['dec'] / s['off_dec']:.2f} of offline; target >= 20x)")
    for name, t, budget in (("encode", s["enc_t"], args.push_ms), ("decode", s["dec_t"], s["dec_push_ms"])):
        ms = np.array(t) * 1000
        print(f"  {name} per push: median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
              f"max {ms.max():.2f} ms against a {budget:.1f} ms budget")
    if not args.skip_pipe:
        pl = pipe_latency(codec, args.pipe_seconds, args.threads)
        print(f"  pipe (encode --stream | decode --stream), {len(pl)} pieces of 20 ms written in real time: latency "
              f"median {1000 * statistics.median(pl):.1f} ms, p95 {1000 * np.percentile(pl, 95):.1f} ms, "
              f"max {1000 * max(pl):.1f} ms (algorithmic: {lat.ms:.2f} ms + up to one 20 ms piece)")
    if args.memory_minutes:
        t0 = time.perf_counter()
        rss = memory(codec, args.memory_minutes)
        print(f"  memory: {args.memory_minutes} min streamed in {time.perf_counter() - t0:.0f} s; RSS after minute 1 "
              f"{rss[0]:.1f} MiB, after minute {len(rss)} {rss[-1]:.1f} MiB (growth {rss[-1] - rss[0]:+.1f} MiB); "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
