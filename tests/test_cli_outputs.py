"""The rule for outputs, driven as a user would: nothing written over an input or the recording a decode came
from, a named output that exists is exit 2, folder runs skip and say so, nothing matched is exit 2, and every
writing command words an existing output the same way; and where encode and decode run (--device)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line, run
from test_codec import trained_checkpoint

from vqaudio.codec import load_codec, load_codes, save_codes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


@pytest.fixture
def talk(tmp_path, speech_file) -> Path:
    dst = tmp_path / "talk.wav"
    shutil.copy(speech_file, dst)
    return dst


def test_decode_never_writes_over_the_recording(talk, ckpt, capsys):
    """``encode talk.wav`` then ``decode talk.vqa`` (even twice, even with --force) leaves talk.wav as it was."""
    original = talk.read_bytes()
    run("encode", talk, "--model", ckpt)
    for extra in ([], ["--force"]):
        run("decode", talk.with_suffix(".vqa"), "--model", ckpt, *extra)
        assert talk.read_bytes() == original
    assert sorted(p.name for p in talk.parent.iterdir()) == ["talk.decoded.wav", "talk.vqa", "talk.wav"]
    capsys.readouterr()
    run("decode", talk.with_suffix(".vqa"), "--model", ckpt, "-o", talk.with_suffix(".vqa"), "--force", expect=2)
    assert "would overwrite the input" in one_line(capsys)


def test_a_named_output_that_exists_is_exit_2(talk, ckpt, capsys):
    """``encode talk.wav --n-q 3`` after a first encode: exit 2 with one line, the 4-level file kept; --force replaces it."""
    vqa = talk.with_suffix(".vqa")
    run("encode", talk, "--model", ckpt)
    before = vqa.read_bytes()
    for out in ([], ["-o", vqa]):  # the default name and the same name given with -o
        run("encode", talk, "--model", ckpt, "--n-q", "3", *out, expect=2)
        assert one_line(capsys) == f"vqaudio encode: error: {vqa}: already exists; pass --force to replace it"
        assert vqa.read_bytes() == before
    run("encode", talk, "--model", ckpt, "--n-q", "3", "--force")
    assert load_codes(vqa).n_q == 3
    run("decode", vqa, "--model", ckpt)
    run("decode", vqa, "--model", ckpt, expect=2)
    assert one_line(capsys).endswith("talk.decoded.wav: already exists; pass --force to replace it")


def test_folder_runs_skip_existing_outputs_and_say_how_many(speech_dir, ckpt, tmp_path, capsys):
    out = tmp_path / "tokens"
    some = sorted(speech_dir.rglob("*.wav"))[:3]
    for p in some:
        run("encode", p, "--model", ckpt, "-o", out / p.parent.name / p.with_suffix(".vqa").name)
    capsys.readouterr()
    run("encode", speech_dir, "-o", out, "--model", ckpt, "--no-progress")
    assert "skipped 3 of 24 output(s) that exist (--force redoes them)" in capsys.readouterr().err
    assert len(list(out.rglob("*.vqa"))) == 24


def test_nothing_matched_is_exit_2(tmp_path, ckpt, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    run("encode", tmp_path / "empty", "-o", tmp_path / "out", "--model", ckpt, expect=2)
    assert "no audio files found" in one_line(capsys)
    run("decode", tmp_path / "empty", "-o", tmp_path / "out", "--model", ckpt, expect=2)
    assert "no .vqa files found" in one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_every_writing_command_refuses_an_existing_named_output(talk, ckpt, tmp_path, capsys):
    """encode, decode, export and average (sample: tests/test_prior.py, eval: tests/test_eval.py) say the same."""
    vqa = tmp_path / "x.vqa"
    runs = {
        "encode": ["encode", talk, "--model", ckpt, "-o", vqa],
        "decode": ["decode", vqa, "--model", ckpt, "-o", tmp_path / "x.flac"],
        "export": ["export", ckpt, "-o", tmp_path / "exported"],
        "average": ["average", ckpt, "-o", tmp_path / "averaged"],
    }
    for argv in runs.values():
        run(*argv)
    capsys.readouterr()
    for name, argv in runs.items():
        run(*argv, expect=2)
        line = one_line(capsys)
        assert line.startswith(f"vqaudio {name}: error: ") and "already exists; pass --force to replace it" in line


def test_device_flag_on_encode_and_decode(talk, ckpt, capsys, monkeypatch):
    """--device cpu|cuda|auto: auto and cpu run here; cuda without a GPU (or a bad name) is one line, nothing written."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    vqa = talk.with_suffix(".vqa")
    for device in ("cuda", "cuda:1", "tpu"):
        run("encode", talk, "--model", ckpt, "--device", device, expect=2)
        line = one_line(capsys)
        assert "--device" in line and ("no CUDA GPU" in line if device.startswith("cuda") else "auto" in line), line
    assert not vqa.exists()
    run("encode", talk, "--model", ckpt, "--device", "auto")
    run("decode", vqa, "--model", ckpt, "--device", "cpu")
    run("decode", vqa, "--device", "cuda", "-o", talk.parent / "g.wav", "--model", ckpt, expect=2)
    assert "no CUDA GPU is available here (use --device cpu)" in one_line(capsys)
    assert sorted(p.name for p in talk.parent.iterdir()) == ["talk.decoded.wav", "talk.vqa", "talk.wav"]


@pytest.mark.parametrize("sig, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_killed_decode_leaves_no_partial_output(tmp_path, sig, status, word):
    """``kill`` (SIGTERM) or Ctrl-C (SIGINT) during a decode: the temporary output is removed, the status is 128 + the
    signal, one line says so."""
    codec = load_codec("speech-8k")
    x = 0.1 * torch.randn(1, 8000 * 60, generator=torch.Generator().manual_seed(0))  # a minute: seconds to decode
    save_codes(tmp_path / "long.vqa", codec.encode(x, 8000))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # as from a terminal: a job started in the background by a script (nohup CMD &) inherits SIGINT ignored
    p = subprocess.Popen([sys.executable, "-m", "vqaudio", "decode", str(tmp_path / "long.vqa"), "-o",
                          str(tmp_path / "long.wav")], env=env, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(f.name.startswith(".long.wav.") for f in tmp_path.iterdir()):  # the temporary output exists
        assert p.poll() is None and time.monotonic() < deadline, "decode ended before it could be signalled"
        time.sleep(0.005)
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1].decode().strip().splitlines()
    assert p.returncode == status and err == [f"vqaudio decode: {word}"], (p.returncode, err)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["long.vqa"]
