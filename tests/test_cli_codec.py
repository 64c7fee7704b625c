"""``vqaudio encode / decode / info`` end to end: outputs, folders, shards, jobs, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_codec import trained_checkpoint

from vqaudio.checkpoint import save_model
from vqaudio.cli import main
from vqaudio.codec import load_codec, load_codes
from vqaudio.filejobs import in_shard
from vqaudio.models.vqvae import VQVAE, VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared machine, OpenMP threads waiting on each other cost far more than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, speech_crops) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("models"), speech_crops)


@pytest.fixture
def wav(tmp_path, speech_file) -> Path:
    dst = tmp_path / "in" / "speech.wav"
    dst.parent.mkdir()
    shutil.copy(speech_file, dst)
    return dst


def run(*args, expect: int = 0) -> None:
    assert main([str(a) for a in args]) == expect


def one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert all(n in err[0] for n in names), err[0]
    return err[0]


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_encode_decode_info_one_file(wav, ckpt, capsys):
    run("encode", wav, "--model", ckpt)  # default output: IN with .vqa
    vqa = wav.with_suffix(".vqa")
    codes = load_codes(vqa)
    assert codes.model == "tiny-speech" and codes.length == sf.info(str(wav)).frames
    original = wav.read_bytes()
    run("decode", vqa, "--model", ckpt)  # default output IN.decoded.wav: never the recording that was encoded
    decoded = wav.parent / "speech.decoded.wav"
    y, sr = sf.read(str(decoded))
    assert sr == sf.info(str(wav)).samplerate and len(y) == codes.length
    np.testing.assert_allclose(y, load_codec(ckpt).decode(codes)[0][0].clamp(-1, 1).numpy(), atol=1.5 / 32768)
    assert wav.read_bytes() == original and files(wav.parent) == ["speech.decoded.wav", "speech.vqa", "speech.wav"]
    run("decode", vqa, "--model", ckpt, "-o", wav.parent / "m.wav", "--sample-rate", "model")
    assert sf.info(str(wav.parent / "m.wav")).samplerate == 8000
    capsys.readouterr()
    run("info", vqa, "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["name"] == "tiny-speech" and info["n_q"] == 4 and info["bits"] == 6
    assert info["payload_bitrate"] == 250 * 4 * 6
    run("info", ckpt)
    out = capsys.readouterr().out
    assert "bitrate:" in out and "1: 1500\n" in out and "hop: 32" in out
    run("info")
    assert "speech-8k" in capsys.readouterr().out


def test_encode_to_audio_listens_right_away(wav, ckpt, tmp_path):
    out = tmp_path / "listen.flac"
    run("encode", wav, "-o", out, "--model", ckpt, "--n-q", "2")
    codec = load_codec(ckpt)
    ref, sr = codec.decode(codec.encode_file(wav, n_q=2))
    y, out_sr = sf.read(str(out), dtype="float32", always_2d=True)
    assert out_sr == sr == sf.info(str(wav)).samplerate and y.shape[0] == ref.shape[-1]
    np.testing.assert_allclose(y[:, 0], ref[0].clamp(-1, 1).numpy(), atol=1.5 / 32768)
    assert not wav.with_suffix(".vqa").exists()


def test_folder_mirrored_skip_force_and_shards(speech_dir, ckpt, tmp_path, capsys):
    out = tmp_path / "tokens"
    run("encode", speech_dir, "-o", out, "--model", ckpt, "--no-progress")
    want = sorted(Path(p).with_suffix(".vqa").as_posix() for p in files(speech_dir))
    assert files(out) == want and len(want) == 24
    first = {p: (out / p).stat().st_mtime_ns for p in want}
    capsys.readouterr()
    run("encode", speech_dir, "-o", out, "--model", ckpt)
    assert "skipped 24 of 24 output(s) that exist" in capsys.readouterr().err
    assert {p: (out / p).stat().st_mtime_ns for p in want} == first
    victim = out / want[0]
    victim.write_bytes(b"stale")
    run("encode", speech_dir, "-o", out, "--model", ckpt, "--force", "--no-progress")
    assert load_codes(victim).frames > 0
    # shards: disjoint, complete, and defined by the relative path only (not by order or machine)
    seen = []
    for i in range(3):
        run("encode", speech_dir, "-o", tmp_path / f"shard{i}", "--model", ckpt, "--shard", f"{i}/3", "--no-progress")
        got = files(tmp_path / f"shard{i}") if (tmp_path / f"shard{i}").exists() else []
        assert got == [p for p in want if in_shard(Path(p).with_suffix(".wav").as_posix(), (i, 3))]
        seen += got
    assert sorted(seen) == want and 0 < len(files(tmp_path / "shard0")) < 24
    # decode a folder back, mirrored
    run("decode", out, "-o", tmp_path / "audio", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "audio") == [Path(p).with_suffix(".decoded.wav").as_posix() for p in want]



def test_manifest_inputs_mirrored(speech_dir, ckpt, tmp_path, capsys):
    """A manifest (.txt/.lst/.scp) names the files to encode; -o mirrors them below the manifest's folder, or
    below the listed files' common folder for a manifest elsewhere; decode takes a manifest of .vqa files."""
    picked = sorted(speech_dir.rglob("*.wav"))[::5]
    here = speech_dir / "some.lst"
    here.write_text("# every fifth\n" + "\n".join(p.relative_to(speech_dir).as_posix() for p in picked) + "\n\n")
    want = sorted(p.relative_to(speech_dir).with_suffix(".vqa").as_posix() for p in picked)
    run("encode", here, "-o", tmp_path / "a", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "a") == want
    elsewhere = tmp_path / "lists" / "some.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("\n".join(str(p) for p in picked[1:]))
    run("encode", elsewhere, "-o", tmp_path / "b", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "b") == sorted(p.relative_to(speech_dir).with_suffix(".vqa").as_posix() for p in picked[1:])
    vqas = tmp_path / "a" / "tokens.scp"
    vqas.write_text("\n".join(want[:2]))
    run("decode", vqas, "-o", tmp_path / "audio", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "audio") == [Path(p).with_suffix(".decoded.wav").as_posix() for p in want[:2]]
    (tmp_path / "bad.txt").write_text("gone.wav\n")
    capsys.readouterr()
    run("encode", tmp_path / "bad.txt", "-o", tmp_path / "c", "--model", ckpt, expect=2)
    assert "missing" in one_error_line(capsys, "bad.txt", "gone.wav")
    run("encode", here, "-o", tmp_path / "one.vqa", "--model", ckpt, expect=2)  # several files, not one
    assert "give a folder" in one_error_line(capsys, "one.vqa") and not (tmp_path / "one.vqa").exists()
    run("decode", here, "-o", tmp_path / "c", "--model", ckpt, expect=2)  # lists audio, not tokens
    assert "not a .vqa file" in one_error_line(capsys, "some.lst")
    (tmp_path / "notes.md").write_text("x")
    run("encode", speech_dir / "part0", tmp_path / "notes.md", "-o", tmp_path / "c", "--model", ckpt, expect=2)
    assert "not an audio file, nor a manifest" in one_error_line(capsys, "notes.md")

def test_jobs_give_identical_files(speech_dir, ckpt, tmp_path):
    small = tmp_path / "small"
    for p in sorted(speech_dir.rglob("*.wav"))[:4]:
        (small / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, small / p.parent.name / p.name)
    run("encode", small, "-o", tmp_path / "one", "--model", ckpt, "--no-progress")
    run("encode", small, "-o", tmp_path / "two", "--model", ckpt, "--jobs", "2", "--no-progress")
    names = files(tmp_path / "one")
    assert names == files(tmp_path / "two") and len(names) == 4
    for n in names:
        assert (tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes()
    run("decode", tmp_path / "one", "-o", tmp_path / "a1", "--model", ckpt, "--no-progress")
    run("decode", tmp_path / "one", "-o", tmp_path / "a2", "--model", ckpt, "--jobs", "2", "--no-progress")
    wavs = files(tmp_path / "a1")
    assert wavs == files(tmp_path / "a2") == [Path(n).with_suffix(".decoded.wav").as_posix() for n in names]
    for n in wavs:
        assert (tmp_path / "a1" / n).read_bytes() == (tmp_path / "a2" / n).read_bytes()


@pytest.mark.parametrize("kind", ["corrupt", "empty", "nan", "series", "missing"])
def test_bad_audio_exit_2_one_line_no_output(tmp_path, ckpt, capsys, kind):
    src = tmp_path / ("x.npy" if kind == "series" else "x.wav")
    if kind == "corrupt":
        src.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 3)
    elif kind == "empty":
        src.write_bytes(b"")
    elif kind == "nan":
        sf.write(src, np.array([0.1, np.nan] * 4000, np.float32), 8000, subtype="FLOAT")
    elif kind == "series":
        np.save(src, np.zeros((500, 1), np.float32))
    good = tmp_path / "x.vqa"
    good.write_bytes(b"previous good output")
    run("encode", src, "-o", good, "--model", ckpt, "--force", expect=2)
    one_error_line(capsys, str(src))
    assert good.read_bytes() == b"previous good output"  # not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({src.name, "x.vqa"} - ({src.name} if kind == "missing" else set()))


def test_one_bad_file_in_a_folder(speech_dir, ckpt, tmp_path, capsys):
    bad = speech_dir / "part1" / "zz_broken.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "tokens"
    run("encode", speech_dir, "-o", out, "--model", ckpt, "--no-progress", expect=2)
    err = capsys.readouterr().err
    assert f"{bad}: cannot read audio" in err and "1 of 25 file(s) failed" in err and "Traceback" not in err
    assert len(files(out)) == 24 and not (out / "part1" / "zz_broken.vqa").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_decode_damaged_token_file(wav, ckpt, capsys, damage):
    run("encode", wav, "--model", ckpt)
    vqa = wav.with_suffix(".vqa")
    data = vqa.read_bytes()
    vqa.write_bytes({"truncate": data[: len(data) // 2], "flip": data[:-9] + bytes([data[-9] ^ 4]) + data[-8:],
                     "foreign": wav.read_bytes()[:500]}[damage])
    out = wav.parent / "out.wav"
    run("decode", vqa, "-o", out, "--model", ckpt, expect=2)
    msg = one_error_line(capsys, str(vqa))
    assert {"truncate": "truncated", "flip": "CRC32", "foreign": "not a vqaudio token file"}[damage] in msg
    assert not out.exists() and files(wav.parent) == ["speech.vqa", "speech.wav"]


def test_model_errors(wav, ckpt, tmp_path, capsys, monkeypatch):
    from vqaudio import registry

    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path / "empty")  # an install without the shipped model
    run("encode", wav, expect=2)
    one_error_line(capsys, "speech-8k", "not shipped", "--model PATH")
    monkeypatch.undo()
    monkeypatch.setenv("VQAUDIO_MODELS", str(tmp_path / "no-user-models"))
    run("encode", wav, "--model", ckpt)
    run("decode", wav.with_suffix(".vqa"), "-o", tmp_path / "y.wav", expect=2)  # neither shipped nor a user model
    one_error_line(capsys, "needs model 'tiny-speech'", "no-user-models", "--model PATH")
    torch.manual_seed(3)
    other = save_model(tmp_path / "other", VQVAE(VQVAEConfig(hidden=4, max_hidden=16, dim=8, n_q=4, codebook_size=64)))
    run("decode", wav.with_suffix(".vqa"), "--model", other, "-o", tmp_path / "z.wav", expect=2)
    one_error_line(capsys, str(wav.with_suffix(".vqa")), "encoded with model 'tiny-speech'")
    tampered = tmp_path / "tampered"
    shutil.copytree(ckpt, tampered)
    weights = next(tampered.glob("model-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10])
    run("encode", wav, "-o", tmp_path / "t.vqa", "--model", tampered, expect=2)
    one_error_line(capsys, str(weights), "truncated or altered")
    assert not (tmp_path / "t.vqa").exists()
    for args in (["--n-q", "9"], ["--shard", "3/3"], ["--jobs", "0"]):
        run("encode", wav, "--model", ckpt, *args, expect=2)
        one_error_line(capsys, args[0])


def test_series_model_cli(tmp_path, capsys):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=4, max_hidden=8, dim=4, n_q=2,
                              codebook_size=16, strides=[2, 2], kmeans_init=False))
    ckpt = save_model(tmp_path / "series-model", model)
    t = np.arange(3000, dtype=np.float32)
    x = np.stack([50 + np.sin(t / 9), np.cos(t / 31)], axis=1)  # [T, C] table
    np.save(tmp_path / "a.npy", x)
    np.savetxt(tmp_path / "b.csv", x, delimiter=",", header="u,v", comments="")
    run("encode", tmp_path / "a.npy", tmp_path / "b.csv", "-o", tmp_path / "tok", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "tok") == ["a.vqa", "b.vqa"]
    assert torch.equal(load_codes(tmp_path / "tok" / "a.vqa").codes, load_codes(tmp_path / "tok" / "b.vqa").codes)
    run("decode", tmp_path / "tok", "--model", ckpt, "--no-progress")
    y = np.load(tmp_path / "tok" / "a.decoded.npy")
    assert y.shape == x.shape and abs(y[:, 0].mean() - 50) < 5  # RevIN statistics restored
    (tmp_path / "dec").mkdir()  # one file into an existing folder: .npy there; to a named file: that name
    run("decode", tmp_path / "tok" / "b.vqa", "-o", tmp_path / "dec", "--model", ckpt, "--no-progress")
    run("decode", tmp_path / "tok" / "b.vqa", "-o", tmp_path / "dec" / "named.npy", "--model", ckpt, "--no-progress")
    assert files(tmp_path / "dec") == ["b.decoded.npy", "named.npy"]
    assert np.array_equal(np.load(tmp_path / "dec" / "b.decoded.npy"), y)
    np.save(tmp_path / "c.npy", x[:, :1])
    run("encode", tmp_path / "c.npy", "--model", ckpt, expect=2)
    one_error_line(capsys, "c.npy", "1 channel(s)")


def test_process_exit_code_and_no_traceback(tmp_path, ckpt):
    bad = tmp_path / "bad.vqa"
    bad.write_bytes(b"\x89VQA\r\n\x1a\n\x01\x00")
    proc = subprocess.run([sys.executable, "-m", "vqaudio", "decode", str(bad), "--model", str(ckpt)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "Warning" not in ln and "warn" not in ln]
    assert lines == [f"vqaudio decode: error: {bad}: truncated token file (10 bytes)"], proc.stderr
    assert not (tmp_path / "bad.wav").exists()


def test_output_naming_the_input_is_refused_even_with_force(wav, ckpt, tmp_path, capsys):
    """``encode IN -o IN --force`` must not replace the user's original with the lossy reconstruction."""
    original = wav.read_bytes()
    for extra in ([], ["--force"]):
        run("encode", wav, "--model", ckpt, "-o", wav, *extra, expect=2)
        one_error_line(capsys, "would overwrite the input", str(wav))
        assert wav.read_bytes() == original
    link = wav.parent / "link.wav"  # another name for the same file
    link.hardlink_to(wav)
    run("encode", wav, "--model", ckpt, "-o", link, "--force", expect=2)
    one_error_line(capsys, "would overwrite the input")
    assert wav.read_bytes() == original and files(wav.parent) == ["link.wav", "speech.wav"]
    torch.manual_seed(0)
    series = save_model(tmp_path / "series-model", VQVAE(VQVAEConfig(
        kind="series", sample_rate=None, channels=1, hidden=4, max_hidden=8, dim=4, n_q=2, codebook_size=16,
        strides=[2, 2], kmeans_init=False)))
    npy = tmp_path / "s.npy"
    np.save(npy, np.sin(np.arange(400, dtype=np.float32) / 7)[:, None])
    before = npy.read_bytes()
    run("encode", npy, "--model", series, "-o", npy, "--force", expect=2)
    one_error_line(capsys, "would overwrite the input", str(npy))
    assert npy.read_bytes() == before


def test_output_folder_under_a_file_is_one_line(wav, speech_dir, ckpt, tmp_path, capsys):
    blocker = tmp_path / "zz"
    blocker.write_text("a file, not a folder")
    for out in (blocker / "y.vqa", blocker / "a" / "b" / "y.vqa"):
        run("encode", wav, "--model", ckpt, "-o", out, expect=2)
        one_error_line(capsys, str(blocker), "not a folder")
    run("encode", speech_dir, "--model", ckpt, "-o", blocker / "tree", "--no-progress", expect=2)  # a folder input
    one_error_line(capsys, str(blocker), "not a folder")
    assert blocker.read_text() == "a file, not a folder"
