"""``vqaudio encode/decode --stream`` through real pipes with the shipped speech-8k model: the same codes as the
offline encode, audio out before the input ends, per-packet flushing, one-line errors at the first bad packet
with the audio before it kept, raw PCM input, and lossless ``convert`` between ``.vqa`` and ``.vqs``."""

from __future__ import annotations

import io
import os
import shlex
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import exact_codes

from vqaudio import tokenstream
from vqaudio.cli import main
from vqaudio.codec import load_codec, load_codes

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
VQ = [sys.executable, "-m", "vqaudio"]
PCM16 = 1 / 32767  # the WAV output's quantisation step


@pytest.fixture(scope="module")
def codec():
    return load_codec("speech-8k")


@pytest.fixture(scope="module")
def talk(tmp_path_factory, speech_files) -> Path:
    """About 6 s of 8 kHz speech as a 16-bit WAV."""
    parts = [sf.read(str(p), dtype="float32")[0] for p in speech_files[:40:4]]
    x = np.concatenate([p for p in parts if p.ndim == 1])[: 6 * 8000]
    path = tmp_path_factory.mktemp("stream") / "talk.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    return path


def wav_of(data: bytes) -> np.ndarray:
    """Samples ``[T, C]`` of a 16-bit WAV with an unknown-length header (what --stream writes)."""
    assert data[:4] == b"RIFF" and struct.unpack_from("<I", data, 40)[0] == 0xFFFFFFFF
    return (np.frombuffer(data[44:], dtype="<i2").astype(np.float32) / 32768).reshape(-1, struct.unpack_from("<H", data, 22)[0])


def sh(cmd: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=cwd, env=ENV, input=stdin, capture_output=True, timeout=300)


@exact_codes
def test_pipe_encode_decode_equals_offline(codec, talk, tmp_path):
    vq = " ".join(shlex.quote(a) for a in VQ)
    p = sh(f"cat {talk} | {vq} encode - -o - --stream | tee s.vqs | {vq} decode - -o - --stream > out.wav", tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    x = torch.from_numpy(sf.read(str(talk), dtype="float32")[0])[None]
    offline = codec.encode(x, 8000)
    streamed = tokenstream.load_any(tmp_path / "s.vqs")
    enc = codec.stream_encoder()
    assert torch.equal(streamed.codes, torch.cat([enc.push(x), enc.flush()], -1))  # the API's stream, any pushes
    assert torch.equal(streamed.codes, offline.codes)  # exact encoder convs: the same bits as the offline chunks
    assert streamed.chunking == codec.stream_chunking
    assert {**streamed.header(), "chunking": None} == {**offline.header(), "chunking": None}
    y = wav_of((tmp_path / "out.wav").read_bytes())
    ref = codec.decode(streamed)[0].clamp(-1, 1).numpy().T
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= PCM16 + 1e-5
    # .vqs <-> .vqa: lossless both ways; info and decode read the stream
    assert main(["convert", str(tmp_path / "s.vqs"), "-o", str(tmp_path / "s.vqa")]) == 0
    assert torch.equal(load_codes(tmp_path / "s.vqa").codes, streamed.codes)
    assert main(["convert", str(tmp_path / "s.vqa"), "-o", str(tmp_path / "back.vqs")]) == 0
    assert tokenstream.load_any(tmp_path / "back.vqs").header() == streamed.header()
    assert main(["info", str(tmp_path / "s.vqs")]) == 0
    assert main(["decode", str(tmp_path / "s.vqs"), "-o", str(tmp_path / "file.wav")]) == 0


def test_raw_pcm_and_output_before_the_input_ends(codec, talk, tmp_path):
    """A writer that sends 0.25 s of raw PCM every 0.1 s: packets come out while it is still writing."""
    pcm = (sf.read(str(talk), dtype="int16")[0]).astype("<i2").tobytes()
    proc = subprocess.Popen([*VQ, "encode", "-", "-o", "-", "--stream", "--rate", "8000", "--channels", "1"],
                            env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got: list[tuple[float, int]] = []

    def reader():
        while chunk := proc.stdout.read1(65536):
            got.append((time.monotonic(), len(chunk)))

    t = threading.Thread(target=reader)
    t.start()
    step = 2 * 2000
    proc.stdin.write(pcm[:step])
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not got and time.monotonic() < deadline:  # the stream header: the process is up
        time.sleep(0.05)
    header = sum(n for _, n in got)
    for i in range(step, len(pcm), step):
        proc.stdin.write(pcm[i : i + step])
        proc.stdin.flush()
        time.sleep(0.1)
    sent_all = time.monotonic()
    proc.stdin.close()
    t.join(timeout=120)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    total = sum(n for _, n in got)
    early = sum(n for when, n in got if when < sent_all) - header
    assert early > 0.5 * (total - header), f"only {early} of {total - header} bytes out before the input ended"
    assert total > header + 4 * (len(pcm) // 2 // codec.hop)  # 4 bytes a frame: every frame came out


def test_corrupted_and_truncated_streams(codec, talk, tmp_path):
    x = torch.from_numpy(sf.read(str(talk), dtype="float32")[0])[None]
    codes = codec.encode(x, 8000)
    buf = io.BytesIO()
    tokenstream.write_codes(buf, codes, packet_frames=40)
    data = buf.getvalue()
    full = codec.decode(codes)[0].clamp(-1, 1).numpy().T
    hlen = struct.unpack_from("<I", data, 10)[0] + 18
    packet = 3 + 40 * codes.items * codes.n_q * 8 // 8 + 4  # bytes of a full packet: tag, count, 8-bit codes, CRC
    bad = bytearray(data)
    bad[hlen + 3 * packet + 10] ^= 0x40  # inside packet 4
    for stream, message in ((bytes(bad), "packet 4 (CRC32 mismatch)"), (data[: hlen + 5 * packet + 7], "packet 6")):
        p = subprocess.run([*VQ, "decode", "-", "-o", "-", "--stream"], input=stream, env=ENV, capture_output=True,
                           timeout=300)
        err = p.stderr.decode().strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and message in err[0], err
        y = wav_of(p.stdout)
        good = int(message.split("packet ")[1].split()[0]) - 1  # packets before the bad one
        assert y.shape[0] == good * 40 * codec.hop  # all their audio, the last frames without their right context
        keep = (good * 40 - codec.latency.decoder) * codec.hop
        assert np.abs(y[:keep] - full[:keep]).max() <= PCM16 + 1e-5
        # to a file instead of a pipe: no partial output is left behind
        (tmp_path / "bad.vqs").write_bytes(stream)
        p = subprocess.run([*VQ, "decode", str(tmp_path / "bad.vqs"), "-o", str(tmp_path / "out.wav"), "--stream"],
                           env=ENV, capture_output=True, timeout=300)
        assert p.returncode == 2 and message in p.stderr.decode()
        assert sorted(f.name for f in tmp_path.iterdir()) == ["bad.vqs"]


def test_a_truncated_wav_is_one_line_after_the_packets_before(talk, tmp_path):
    data = talk.read_bytes()
    p = subprocess.run([*VQ, "encode", "-", "-o", "-", "--stream"], input=data[: len(data) // 2], env=ENV,
                       capture_output=True, timeout=300)
    err = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "stdin: truncated WAV stream" in err[0], err
    r = tokenstream.StreamReader(io.BytesIO(p.stdout), "out")
    with pytest.raises(Exception, match="no end packet"):
        for _ in r.packets():
            pass
    assert r.frames > 0.9 * (len(data) // 2 - 44) / 2 / 84  # the frames of what came were sent


@pytest.mark.parametrize("args, data", [(["--rate", "8000"], b""), ([], None)])
def test_an_empty_stream_is_one_line_exit_2(tmp_path, args, data):
    """No samples at all (empty raw PCM, or a valid WAV of 0 samples): one line, exit 2, not a traceback."""
    if data is None:
        sf.write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), 8000, subtype="PCM_16")
        data = (tmp_path / "empty.wav").read_bytes()
    p = subprocess.run([*VQ, "encode", "-", "-o", "-", "--stream", *args], input=data, env=ENV, capture_output=True,
                       timeout=300)
    err = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "stdin: is empty (0 samples)" in err[0], err
