"""Shared by the CLI and codec tests: the tiny trained speech model as a fixture, running the CLI in-process, and
reading its one stderr line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_codec import trained_checkpoint

from vqaudio.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    """The tiny speech VQ-VAE of ``test_codec.trained_checkpoint`` (trained once per session)."""
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


def run(*args, expect: int = 0) -> None:
    """``vqaudio ARGS`` in this process, with the exit status expected."""
    assert main([str(a) for a in args]) == expect


def one_line(capsys) -> str:
    """The single line the command wrote to stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]
