"""Audio files that are valid but odd, or broken in ways a reader meets: float samples far beyond full scale, NaN in
a ``--stream`` input, sox's unknown-length WAV header from a pipe, and a FIFO given as a file."""

from __future__ import annotations

import io
import os
import struct
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_helpers import ckpt, one_line, run  # noqa: F401  (ckpt: the fixture)

from vqaudio.codec import load_codec
from vqaudio.errors import AudioError


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return 0.3 * np.sin(2 * np.pi * 220 * t)


def test_far_beyond_full_scale_and_nan_are_one_line(ckpt, tmp_path, capsys, monkeypatch):  # noqa: F811
    sf.write(tmp_path / "big.wav", (1e39 * _tone()).astype(np.float32), 8000, subtype="FLOAT")  # finite in float32
    nan = _tone().astype(np.float32)
    nan[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 8000, subtype="FLOAT")
    run("encode", tmp_path / "big.wav", "--model", ckpt, expect=2)
    assert "samples far beyond full scale (peak 3e+38" in one_line(capsys)
    for extra in ([], ["--stream", "-o", tmp_path / "nan.vqs"]):
        run("encode", tmp_path / "nan.wav", *extra, "--model", ckpt, expect=2)
        assert "nan.wav: contains NaN or Inf samples" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.wav", "nan.wav"]
    sf.write(tmp_path / "loud.wav", (2 * _tone()).astype(np.float32), 8000, subtype="FLOAT")  # above 1: still audio
    run("encode", tmp_path / "loud.wav", "--model", ckpt)
    codec = load_codec(str(ckpt))
    with pytest.raises(AudioError, match=r"input\[1\]: samples far beyond full scale"):  # the list API too
        codec.encode([torch.zeros(1, 800), torch.full((1, 800), 5e3)], 8000)


def test_sox_pipe_header_reads_to_the_end(ckpt, tmp_path, capsys, monkeypatch):  # noqa: F811
    """sox writes a data size of 0x7FFFF000 when it cannot seek back: the length is unknown, not truncated."""
    sf.write(tmp_path / "a.wav", _tone(), 8000, subtype="PCM_16")
    data = (tmp_path / "a.wav").read_bytes()
    i = data.index(b"data")
    piped = data[: i + 4] + struct.pack("<I", 0x7FFFF000) + data[i + 8 :]
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "ref.vqa", "--model", ckpt)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
    run("encode", "-", "-o", tmp_path / "p.vqa", "--model", ckpt)
    (tmp_path / "piped.wav").write_bytes(piped)  # the stream reader parses the header the same way from a file
    run("encode", tmp_path / "piped.wav", "--stream", "-o", tmp_path / "p.vqs", "--model", ckpt)
    assert (tmp_path / "p.vqa").read_bytes() == (tmp_path / "ref.vqa").read_bytes()
    run("decode", tmp_path / "p.vqs", "-o", tmp_path / "p.wav", "--model", ckpt)
    assert sf.info(str(tmp_path / "p.wav")).frames == 8000


def test_a_fifo_input_is_refused_and_leaves_nothing(ckpt, tmp_path, capsys):  # noqa: F811
    os.mkfifo(tmp_path / "f.wav")
    run("encode", tmp_path / "f.wav", "-o", tmp_path / "f.vqa", "--model", ckpt, expect=2)
    assert "f.wav: not a regular file (a pipe or device: read it as stdin, with - < FILE)" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.wav"]
