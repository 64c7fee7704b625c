"""The command line's own manners: quick ``--version`` / ``--help`` without torch, help text on every flag and
descriptions that end, a bad flag answered with its subcommand's usage, a closed stdout ending quietly, and a
hint for EnCodec's ``encode IN OUT``."""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vqaudio.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_version_and_help_do_not_import_torch():
    names = list(subparsers())
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from vqaudio.cli import main
        for argv in [["--version"], ["--help"]] + [[n, "--help"] for n in {names!r}]:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        print(sorted(m for m in ("torch", "torchaudio", "numpy", "soundfile") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)
    version = subprocess.run([sys.executable, "-m", "vqaudio", "--version"], env=ENV, capture_output=True, text=True)
    assert version.stdout.strip().startswith("vqaudio ") and version.returncode == 0


def test_every_flag_has_help_and_every_description_ends():
    for name, p in subparsers().items():
        assert p.description and p.description.rstrip().endswith((".", ")")), (name, p.description)
        for action in p._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


@pytest.mark.parametrize("argv", [["encode", "x.wav", "--bogus"], ["train", "--data", "d", "--exp", "e", "--stepz", "3"],
                                  ["decode", "--type", "mp4", "x.vqa"]])
def test_a_bad_flag_prints_the_subcommand_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"usage: vqaudio {argv[0]} ") and f"vqaudio {argv[0]}: error:" in err


def test_a_closed_stdout_ends_quietly(tmp_path):
    """``vqaudio info speech-8k | true``: the reader is gone before the first write."""
    cmd = f"{shlex.quote(sys.executable)} -m vqaudio info speech-8k | true; echo rc=${{PIPESTATUS[0]}} >&2"
    out = subprocess.run(["bash", "-c", cmd], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stderr.strip() == "rc=141", out.stderr


def test_broken_pipe_in_process(monkeypatch, capsys):
    class Gone(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    assert main(["models"]) == 141
    assert capsys.readouterr().err == ""


def test_encodec_style_output_argument_gets_a_hint(tmp_path, speech_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(speech_file, tmp_path / "talk.wav")
    assert main(["encode", "talk.wav", "out.vqa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vqaudio encode: error: out.vqa: no such file or folder (to name the output, use -o out.vqa)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.wav"]
