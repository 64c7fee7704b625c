"""``-`` for stdin and stdout, as in sox and ffmpeg: real pipes between processes, byte-identical to going through
files, nothing else on stdout, and never a folder named ``-``."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_codec import trained_checkpoint

from vqaudio.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
VQ = f"{shlex.quote(sys.executable)} -m vqaudio"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


@pytest.fixture
def talk(tmp_path, speech_file) -> Path:
    x, sr = sf.read(str(speech_file), dtype="float32")
    sf.write(tmp_path / "talk.wav", x, sr)
    sf.write(tmp_path / "talk.flac", x, sr)
    sf.write(tmp_path / "talk.ogg", x, sr)
    return tmp_path / "talk.wav"


def shell(cmd: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=cwd, env=ENV, input=stdin, capture_output=True, timeout=300)


def test_a_pipeline_equals_going_through_files(talk, ckpt, tmp_path):
    """``cat talk.flac | vqaudio encode - | vqaudio decode - > out.wav``: the same bytes as the file commands."""
    m = f"--model {shlex.quote(str(ckpt))}"
    for src in (talk, talk.with_suffix(".flac"), talk.with_suffix(".ogg")):
        assert main(["encode", str(src), "-o", str(tmp_path / f"{src.suffix[1:]}.vqa"), "--model", str(ckpt)]) == 0
    assert main(["decode", str(tmp_path / "flac.vqa"), "-o", str(tmp_path / "file.wav"), "--model", str(ckpt)]) == 0
    p = shell(f"cat talk.flac | {VQ} encode - {m} | {VQ} decode - {m} > piped.wav", tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "piped.wav").read_bytes() == (tmp_path / "file.wav").read_bytes()
    for fmt in ("wav", "ogg"):
        p = shell(f"{VQ} encode - {m}", tmp_path, stdin=talk.with_suffix(f".{fmt}").read_bytes())
        assert p.returncode == 0 and p.stdout == (tmp_path / f"{fmt}.vqa").read_bytes(), p.stderr.decode()
    p = shell(f"{VQ} encode talk.wav -o - {m}", tmp_path)  # a file in, stdout out
    assert p.returncode == 0 and p.stdout == (tmp_path / "wav.vqa").read_bytes()
    assert main(["decode", str(tmp_path / "flac.vqa"), "-o", str(tmp_path / "file.flac"), "--model", str(ckpt)]) == 0
    p = shell(f"{VQ} decode - -o - --type flac {m}", tmp_path, stdin=(tmp_path / "flac.vqa").read_bytes())
    y, sr = sf.read(io.BytesIO(p.stdout), dtype="float32")
    assert p.returncode == 0 and np.array_equal(y, sf.read(str(tmp_path / "file.flac"), dtype="float32")[0])
    assert not (tmp_path / "-").exists()


def test_stdin_to_a_named_file_and_the_rule_for_existing_outputs(talk, ckpt, tmp_path, monkeypatch, capsys):
    def stdin(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    stdin(talk.read_bytes())
    assert main(["encode", "-", "-o", str(tmp_path / "in.vqa"), "--model", str(ckpt)]) == 0
    assert main(["encode", str(talk), "-o", str(tmp_path / "ref.vqa"), "--model", str(ckpt)]) == 0
    assert (tmp_path / "in.vqa").read_bytes() == (tmp_path / "ref.vqa").read_bytes()
    stdin(talk.read_bytes())
    assert main(["encode", "-", "-o", str(tmp_path / "in.vqa"), "--model", str(ckpt)]) == 2
    assert "in.vqa: already exists; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["encode", "-", "x.wav"], "- (stdin) must be the only input"),
    (["encode", "IN", "-o", "-"], "-o - (stdout) takes one input file"),
    (["decode", "-", "-o", "OUT"], "-o must name a file, not a folder"),
    (["encode", "-"], "stdin: is empty (0 bytes)"),
    (["decode", "-", "-o", "x.wav"], "stdin: truncated token file (0 bytes)"),
    (["encode", "-", "-o", "x.vqa", "STDIN=t,x\n0,1\n1,3\n"], "text or a .npy array, not audio: for a series pass --model"),
])
def test_pipe_errors_are_one_line(tmp_path, ckpt, monkeypatch, capsys, argv, message):
    (tmp_path / "IN").mkdir()
    (tmp_path / "OUT").mkdir()
    monkeypatch.chdir(tmp_path)
    data = b"".join(a[6:].encode() for a in argv if a.startswith("STDIN="))
    argv = [a for a in argv if not a.startswith("STDIN=")]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
    assert main([*argv, "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "-").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["IN", "OUT"]


def test_binary_output_to_a_terminal_is_refused(talk, ckpt, monkeypatch, capsys):
    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal(io.BytesIO()))
    assert main(["encode", str(talk), "-o", "-", "--model", str(ckpt)]) == 2
    assert "stdout is a terminal" in capsys.readouterr().err


def test_a_device_or_fifo_output_is_written_in_place(talk, ckpt, tmp_path, capsys):
    """``-o /dev/null`` (timing a decode) and ``-o FIFO`` are written like stdout: nothing is renamed over the
    device, no ``--force`` is needed, and a FIFO's reader gets the bytes a file would hold."""
    m = ["--model", str(ckpt)]
    null = Path(os.devnull)
    assert main(["encode", str(talk), "-o", str(tmp_path / "talk.vqa"), *m]) == 0
    assert main(["encode", str(talk), "--stream", "-o", str(tmp_path / "talk.vqs"), *m]) == 0
    for argv in (["encode", str(talk)], ["decode", str(tmp_path / "talk.vqa")], ["convert", str(tmp_path / "talk.vqa")],
                 ["encode", "--stream", str(talk)], ["decode", "--stream", str(tmp_path / "talk.vqs")]):
        assert main([*argv, "-o", str(null), *([] if argv[0] == "convert" else m)]) == 0, capsys.readouterr().err
        assert null.is_char_device() and not list(null.parent.glob(".null.*"))
    assert main(["decode", str(tmp_path / "talk.vqa"), str(tmp_path / "talk.vqs"), "-o", str(null), *m]) == 2
    assert "takes one input file" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "talk.vqa"), "-o", str(tmp_path / "file.wav"), *m]) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    p = shell(f"{VQ} decode talk.vqa -o fifo --model {shlex.quote(str(ckpt))}", tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert reader.communicate(timeout=60)[0] == (tmp_path / "file.wav").read_bytes()
    assert fifo.is_fifo()
