"""Models by name, and token files that find their model by the weights sha256 in their header: shipped names
beat local folders, the user model folder ($VQAUDIO_MODELS), ``vqaudio models``, and old ``.vqa`` files that
keep decoding when the shipped model is renamed.

``tests/data/speech-8k-37ac2a1f.vqa`` was written by the ``speech-8k`` of vqaudio 0.1 (weights sha256
``37ac2a1f034e4e41...``, shipped as ``speech-8k-asterisk`` since the any-voice ``speech-8k`` replaced it) from
:func:`signal` (0.5 s at 16 kHz; 539 bytes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_helpers import one_line, run
from test_codec import trained_checkpoint

from vqaudio import registry
from vqaudio.codec import load_codec, load_codes

FIXTURE = Path(__file__).parent / "data" / "speech-8k-37ac2a1f.vqa"
OLD_SHA = "37ac2a1f034e4e41947c1c47bb0cf3b89cfae11e1a6772a74d04ad05675c990b"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


def signal() -> tuple[np.ndarray, int]:
    """The fixture's input: a 140 Hz voiced buzz with vibrato and a little noise, 0.5 s at 16 kHz."""
    sr = 16000
    t = np.arange(int(0.5 * sr)) / sr
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * np.hanning(len(t))
    x += 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32), sr


@pytest.fixture(autouse=True)
def _own_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("VQAUDIO_MODELS", str(tmp_path / "user-models"))


def decoded(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def test_fixture_was_made_by_the_old_model():
    codes = load_codes(FIXTURE)
    assert (codes.model, codes.model_sha256, codes.orig_sample_rate, codes.n_q) == ("speech-8k", OLD_SHA, 16000, 4)
    x, sr = signal()
    assert registry.find_by_sha256(OLD_SHA)[0] == "speech-8k-asterisk"
    codec = load_codec(registry.find_by_sha256(OLD_SHA)[1])  # by sha256: the weights are shipped under a new name
    again = codec.encode(torch.from_numpy(x)[None], sr).codes
    assert (again == codes.codes).float().mean() >= 0.98  # the same codes (a near-tie may flip on another CPU)


def test_old_token_files_decode_after_the_shipped_model_is_renamed(tmp_path, speech_file, capsys):
    """The any-voice model took the name ``speech-8k`` and the three-voice weights moved to ``speech-8k-asterisk``: a
    .vqa written by them (the committed fixture, whose header says ``speech-8k``) decodes without --model, with the
    old weights, found by the sha256 in its header; the new ``speech-8k`` refuses it. New files use the new model."""
    assert load_codec().sha256 != OLD_SHA and load_codec("speech-8k-asterisk").sha256 == OLD_SHA
    run("decode", FIXTURE, "-o", tmp_path / "fixture.wav")
    run("decode", FIXTURE, "--model", "speech-8k-asterisk", "-o", tmp_path / "fixture-named.wav")
    assert np.array_equal(decoded(tmp_path / "fixture.wav"), decoded(tmp_path / "fixture-named.wav"))
    capsys.readouterr()
    run("info", FIXTURE, "--json")
    assert json.loads(capsys.readouterr().out)["decoded_with"].startswith("speech-8k-asterisk (")
    run("decode", FIXTURE, "--model", "speech-8k", "-o", tmp_path / "wrong.wav", expect=2)  # the new weights: refused
    assert "encoded with model 'speech-8k'" in one_line(capsys)
    talk = tmp_path / "talk.wav"
    shutil.copy(speech_file, talk)
    run("encode", talk)  # by the default model, the new one
    codes = load_codes(talk.with_suffix(".vqa"))
    assert (codes.model, codes.model_sha256) == ("speech-8k", load_codec().sha256)
    run("decode", talk.with_suffix(".vqa"), "-o", tmp_path / "talk.out.wav")
    assert decoded(tmp_path / "talk.out.wav").shape == decoded(talk).shape


def test_user_model_folder_by_name_and_by_sha256(tmp_path, ckpt, speech_file, capsys, monkeypatch):
    user = tmp_path / "user-models"
    user.mkdir()
    run("export", ckpt, "-o", user / "mine")
    capsys.readouterr()
    run("models")
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["mine", "user", "audio"] for line in out.splitlines()), out
    assert any(line.split()[:2] == ["speech-8k", "shipped"] and "GPL-3.0-or-later" in line for line in out.splitlines())
    assert any(line.split()[:2] == ["speech-8k-asterisk", "shipped"] and "CC-BY-SA-3.0" in line
               for line in out.splitlines())
    assert f"user models: {user}" in out
    run("models", "--json")
    mine = next(m for m in json.loads(capsys.readouterr().out)["models"] if m["name"] == "mine")
    assert mine["sample_rate"] == 8000 and mine["bitrates"] == [1500.0, 3000.0, 4500.0, 6000.0] and mine["bytes"] > 0
    talk = tmp_path / "talk.wav"
    shutil.copy(speech_file, talk)
    run("encode", talk, "--model", "mine")
    assert load_codes(talk.with_suffix(".vqa")).model == "mine"
    (user / "mine").rename(user / "renamed")  # the name in the header is only a hint: the sha256 finds it
    run("decode", talk.with_suffix(".vqa"))
    assert sf.info(str(tmp_path / "talk.decoded.wav")).frames == sf.info(str(talk)).frames
    shutil.rmtree(user / "renamed")
    run("decode", talk.with_suffix(".vqa"), "-o", tmp_path / "x.wav", expect=2)
    line = one_line(capsys)
    assert "needs model 'mine' (weights sha256 " in line and str(user) in line and "--model PATH" in line


def test_shipped_names_beat_local_folders(tmp_path, speech_file, monkeypatch, capsys, ckpt):
    """``encode corpus -o speech-8k/`` makes a folder named like the shipped model; default runs keep working."""
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(speech_file, corpus / "a.wav")
    run("encode", "corpus", "-o", "speech-8k/")
    assert (tmp_path / "speech-8k" / "a.vqa").is_file()
    run("encode", corpus / "a.wav", "-o", "b.vqa")
    run("decode", "b.vqa")
    run("encode", corpus / "a.wav", "-o", "c.vqa", "--model", "speech-8k")
    shipped_sha = load_codec("speech-8k").sha256
    assert load_codes("c.vqa").model_sha256 == shipped_sha
    capsys.readouterr()
    run("encode", corpus / "a.wav", "-o", "d.vqa", "--model", "./speech-8k", expect=2)  # the folder, asked for
    assert "speech-8k: not a checkpoint folder" in one_line(capsys)
    user = tmp_path / "user-models"
    user.mkdir()
    shutil.copytree(ckpt, user / "speech-8k")  # a user model cannot take a shipped name either
    run("encode", corpus / "a.wav", "-o", "e.vqa", "--model", "speech-8k")
    assert load_codes("e.vqa").model_sha256 == shipped_sha
