"""One-line warnings, not errors: input above the model's rate (its upper band is dropped) and clipped input."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_codec import trained_checkpoint

from vqaudio.cli import main
from vqaudio.codec import load_codec
from vqaudio.errors import VQAudioWarning
from vqaudio.input_warnings import ClipCounter


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


def music(sr: int = 44100, seconds: float = 1.5) -> np.ndarray:
    """A stereo chord with partials up to 10 kHz: ``[T, 2]``."""
    t = np.arange(int(sr * seconds)) / sr
    left = sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 2500, 7000, 10000))
    return (0.12 * np.stack([left, np.roll(left, 300)], axis=1)).astype(np.float32)


def clip_runs(x: torch.Tensor, block: int) -> int:
    c = ClipCounter()
    for i in range(0, x.shape[-1], block):
        c.push(x[:, i : i + block])
    return c.runs


def test_clip_runs_are_counted_across_blocks():
    x = torch.zeros(2, 100)
    x[0, 10:13] = 1.0  # a run of 3: clipping
    x[0, 40:42] = -1.0  # 2 in a row: not
    x[0, 60] = 1.0  # a single full-scale peak: not
    x[1, 70:90] = -0.9995  # a flat top of 20 (one run)
    for block in (1, 2, 3, 11, 100):
        assert clip_runs(x, block) == 2, block
    assert clip_runs(torch.full((1, 50), 0.99), 7) == 0


def test_api_warns_about_the_rate_and_clipping(ckpt):
    codec = load_codec(ckpt)
    with pytest.warns(VQAudioWarning, match=r"input: 44100 Hz input, but the model codes 8000 Hz: content above 4 kHz "
                                            r"is dropped"):
        codec.encode(torch.from_numpy(music()).T.contiguous(), 44100)
    loud = (torch.from_numpy(music(8000)[:, 0]) * 20).clamp(-1, 1)[None]
    with pytest.warns(VQAudioWarning, match=r"clipped: \d+ run\(s\) of 3 or more samples at full scale"):
        codec.encode(loud, 8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VQAudioWarning)
        codec.encode(torch.from_numpy(music(8000)).T.contiguous(), 8000)  # 8 kHz, not clipped: silent


def test_cli_prints_one_line_per_warning(tmp_path, ckpt, speech_file, capfd):
    """capfd, not capsys: worker processes (--jobs) write to the file descriptor."""
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "song.wav", music(), 44100)
    x, sr = sf.read(str(speech_file), dtype="float32")
    sf.write(src / "loud.wav", np.clip(x * 30, -1, 1), sr)
    shutil.copy(speech_file, src / "talk.wav")
    assert main(["encode", str(src / "song.wav"), "--model", str(ckpt), "-o", str(tmp_path / "song.vqa")]) == 0
    assert capfd.readouterr().err.strip().splitlines() == [
        f"vqaudio encode: warning: {src / 'song.wav'}: 44100 Hz input, but the model codes 8000 Hz: content "
        "above 4 kHz is dropped"]
    assert main(["encode", str(src / "loud.wav"), "--model", str(ckpt), "-o", str(tmp_path / "loud.flac")]) == 0
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vqaudio encode: warning: {src / 'loud.wav'}: clipped: ")
    assert main(["encode", str(src / "talk.wav"), "--model", str(ckpt), "-o", str(tmp_path / "talk.vqa")]) == 0
    assert capfd.readouterr().err == ""  # real 8 kHz speech: nothing to say
    assert main(["encode", str(src), "-o", str(tmp_path / "tok"), "--model", str(ckpt), "--jobs", "2",
                 "--no-progress"]) == 0  # from worker processes: the same lines
    err = sorted(capfd.readouterr().err.strip().splitlines())
    assert len(err) == 2 and "clipped" in err[0] and "loud.wav" in err[0] and "content above 4 kHz" in err[1], err
