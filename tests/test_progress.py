"""Progress bars: a long single file is counted in seconds of audio on a terminal; nothing goes to a log file
unless --progress asks for it."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf
from test_codec import trained_checkpoint

from vqaudio.cli import main
from vqaudio.progress import progress_wanted


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def long_talk(tmp_path, speech_files) -> Path:
    """About 3 minutes of speech in one file."""
    out = tmp_path / "long.wav"
    with sf.SoundFile(str(out), "w", 8000, 1, "PCM_16") as f:
        for p in speech_files[:40]:
            x, sr = sf.read(str(p), dtype="float32")
            if sr == 8000 and x.ndim == 1:
                f.write(x)
    return out


def test_progress_wanted(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_wanted(None) and progress_wanted(True) and not progress_wanted(False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file
    assert not progress_wanted(None) and progress_wanted(True)


def test_a_single_file_is_counted_in_seconds_of_audio_on_a_terminal(long_talk, ckpt, monkeypatch):
    seconds = sf.info(str(long_talk)).duration
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["encode", str(long_talk), "--model", str(ckpt)]) == 0
    assert main(["decode", str(long_talk.with_suffix(".vqa")), "--model", str(ckpt)]) == 0
    out = term.getvalue()
    for step in ("encode", "decode"):  # the rate is the speed in x realtime (seconds of audio per second)
        assert f"{step}:  " in out and f"/{seconds:.0f} s of audio" in out and "s/s]" in out, out
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["encode", str(long_talk), "--model", str(ckpt), "-o", str(long_talk.parent / "b.vqa"),
                 "--no-progress"]) == 0
    assert term.getvalue() == ""


def test_no_bars_in_a_log_file_unless_asked(long_talk, ckpt, tmp_path, capsys):
    assert main(["encode", str(long_talk), "--model", str(ckpt), "-o", str(tmp_path / "a.vqa")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["encode", str(long_talk), "--model", str(ckpt), "-o", str(tmp_path / "b.vqa"), "--progress"]) == 0
    assert "s of audio" in capsys.readouterr().err
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(long_talk, folder / "x.wav")
    shutil.copy(long_talk, folder / "y.wav")
    assert main(["encode", str(folder), "-o", str(tmp_path / "tok"), "--model", str(ckpt)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["decode", str(tmp_path / "tok"), "-o", str(tmp_path / "dec"), "--model", str(ckpt), "--progress"]) == 0
    assert "2/2" in capsys.readouterr().err  # a folder is counted in files
