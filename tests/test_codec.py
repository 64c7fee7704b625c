"""The codec: chunked = whole-file codes, streaming resampling/decoding, channel policy, series, memory."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from conftest import exact_codes

from vqaudio.checkpoint import save_model
from vqaudio.codec import ChunkedRunner, Codec, StreamResampler, load_codec, load_codes, save_codes
from vqaudio.errors import AudioError, CheckpointError, ConfigError, TokenFileError
from vqaudio.models.vqvae import VQVAE, VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden=4, max_hidden=16, dim=8, n_q=4, codebook_size=64)
_CACHE: dict[str, object] = {}


def trained_checkpoint(root: Path, crops: torch.Tensor) -> Path:
    """A tiny speech VQ-VAE (hop 32, 8 kHz) trained for a few steps on real speech (k-means-initialised
    codebooks, so codes are spread over the codebooks), saved as a checkpoint. Cached per session."""
    if "ckpt" not in _CACHE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = VQVAE(VQVAEConfig(**TINY))
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        for step in range(6):
            x = crops[(torch.arange(8) + 8 * step) % crops.shape[0]]
            loss = model(x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        _CACHE["ckpt"] = save_model(root / "tiny-speech", model.eval())
        torch.set_num_threads(threads)
    return _CACHE["ckpt"]


def long_speech(files: list[Path], seconds: float) -> torch.Tensor:
    """Asterisk prompts concatenated to at least ``seconds`` of 8 kHz speech: ``[1, T]``."""
    parts, total = [], 0
    for p in files:
        x, sr = sf.read(str(p), dtype="float32")
        if sr == 8000 and x.ndim == 1:
            parts.append(torch.from_numpy(x))
            total += len(x)
        if total >= seconds * 8000:
            break
    return torch.cat(parts)[None]


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
def codec(ckpt) -> Codec:
    return load_codec(ckpt)


@pytest.fixture(scope="session")
def speech_40s(speech_files) -> torch.Tensor:
    return long_speech(speech_files, 40)


# --- streaming building blocks -----------------------------------------------------------------

@pytest.mark.parametrize("orig, new", [(44100, 8000), (8000, 16000), (22050, 8000), (48000, 8000), (11025, 8000)])
def test_stream_resampler_equals_whole_file(orig, new):
    x = torch.randn(2, 3 * orig + 1234)
    whole = AF.resample(x, orig, new)
    for block, chunk_seconds in ((1000, 0.05), (4096, 0.5), (10**6, 10.0)):
        rs = StreamResampler(orig, new, chunk_seconds)
        pieces = [y for i in range(0, x.shape[-1], block) for y in rs.push(x[:, i : i + block])] + list(rs.finish())
        torch.testing.assert_close(torch.cat(pieces, -1), whole, rtol=0, atol=0)


def test_stream_resampler_refuses_rates_with_a_small_gcd():
    """8000 -> 8001 Hz would build a [8001, 1, ~8000] kernel (GBs for a second of audio): refused, one line."""
    for orig, new in ((8000, 8001), (44101, 8000), (8000, 44101)):
        with pytest.raises(ConfigError, match=f"cannot resample {orig} Hz to {new} Hz") as info:
            StreamResampler(orig, new)
        assert "\n" not in str(info.value)
    for a, b in ((44100, 8000), (48000, 44100), (22050, 16000), (11025, 8000), (96000, 44100), (32000, 44100),
                 (44056, 8000)):
        StreamResampler(a, b), StreamResampler(b, a)  # common pairs keep working


def test_chunked_runner_equals_whole():
    """A strided conv with zero padding (edge effects) and a 9-unit receptive field."""
    w = torch.randn(3, 1, 40)

    def fn(x):  # [B, 1, n] -> [B, 3, ceil(n / 4)], unit 4 samples -> 1 output
        x = F.pad(x, (18, 18 + (-x.shape[-1]) % 4))
        return F.conv1d(x, w, stride=4)

    x = torch.randn(2, 1, 4001)
    whole = fn(x)
    for context in (5, 9):
        runner = ChunkedRunner(fn, 4, 1, context, chunk=7)
        out = [y for i in range(0, 4001, 333) for y in runner.push(x[..., i : i + 333])] + list(runner.finish())
        torch.testing.assert_close(torch.cat(out, -1), whole)
    runner = ChunkedRunner(fn, 4, 1, 2, chunk=7)  # too little context: the test above is not vacuous
    out = [y for y in runner.push(x)] + list(runner.finish())
    assert not torch.allclose(torch.cat(out, -1), whole)


# --- the codec on real speech --------------------------------------------------------------------

@exact_codes
def test_chunked_codes_equal_whole_file_codes(codec, speech_40s):
    """40 s of concatenated prompts in 1 s chunks (40 cuts): the same code bits (exact encoder convs)."""
    x = speech_40s
    model = codec.model
    whole = model.encode(x[None])  # [1, n_q, F] in one go
    codec.chunk_seconds = 1.0
    chunked = codec.encode(x, 8000).codes
    assert chunked.shape == whole.shape == (1, 4, math.ceil(x.shape[-1] / 32))
    assert len(whole[0, 0].unique()) >= 16  # a real codebook in use, not a degenerate model
    differ = (chunked != whole).any(1).sum().item()
    print(f"chunked vs whole: {differ} of {whole.shape[-1]} frames differ ({100 * differ / whole.shape[-1]:.3f}%)")
    assert differ == 0, f"{differ} of {whole.shape[-1]} frames differ"
    # EnCodec-style naive chunking (no overlap) does not reproduce the whole-file codes
    step = 8000
    naive = torch.cat([model.encode(x[None, :, i : i + step]) for i in range(0, x.shape[-1], step)], -1)
    assert (naive != whole).any(1).sum().item() > 10 * max(differ, 1)


def test_resampled_stereo_channels_and_decode(codec, speech_40s):
    """16 kHz stereo: each channel coded separately (= coding it alone), resampling chunked exactly,
    decode streamed = whole-file decode, at the original or the model's rate."""
    x8 = speech_40s[:, : 8000 * 20]
    x = torch.cat([AF.resample(x8, 8000, 16000), AF.resample(x8.flip(-1), 8000, 16000)])[:, :-7]  # [2, T] odd length
    codec.chunk_seconds = 3.0
    codes = codec.encode(x, 16000)
    assert codes.codes.shape[:2] == (2, 4) and codes.channels == 2 and codes.orig_sample_rate == 16000
    whole = codec.model.encode(AF.resample(x, 16000, 8000)[:, None])
    assert (codes.codes != whole).any(1).sum().item() <= 0.001 * whole.numel() / 4
    left = codec.encode(x[:1], 16000).codes
    assert torch.equal(left[0], codes.codes[0])

    y, sr = codec.decode(codes)
    assert sr == 16000 and y.shape == x.shape and y.dtype == torch.float32
    model_len = codes.model_length
    ref_model = codec.model.decode(codes.codes, model_len)[:, 0]
    torch.testing.assert_close(y, AF.resample(ref_model, 8000, 16000)[:, : x.shape[-1]], atol=1e-5, rtol=1e-4)
    ym, srm = codec.decode(codes, sample_rate="model")
    assert srm == 8000 and ym.shape == (2, model_len)
    torch.testing.assert_close(ym, ref_model, atol=1e-5, rtol=1e-4)


def test_n_q_and_bitrate(codec, speech_40s):
    x = speech_40s[:, :16000]
    full = codec.encode(x, 8000)
    two = codec.encode(x, 8000, n_q=2)
    assert two.n_q == 2 and torch.equal(two.codes, full.codes[:, :2])  # residual VQ: a prefix
    assert codec.bitrate(2) == 250 * 2 * 6 and codec.bitrate() == 250 * 4 * 6
    y, _ = codec.decode(two)
    assert y.shape == x.shape
    for bad in (0, 5, 2.0):
        with pytest.raises(ConfigError, match="n_q"):
            codec.encode(x, 8000, n_q=bad)


def test_file_round_trip_streams_the_same_result(codec, speech_file, tmp_path):
    codes = codec.encode_file(speech_file)
    wav, sr = sf.read(str(speech_file), dtype="float32")
    assert codes.source == str(speech_file) and codes.length == len(wav) and codes.orig_sample_rate == sr
    assert torch.equal(codes.codes, codec.encode(torch.from_numpy(wav)[None], sr).codes)
    save_codes(tmp_path / "a.vqa", codes)
    back = load_codes(tmp_path / "a.vqa")
    assert torch.equal(back.codes, codes.codes) and back.header() == codes.header()
    codec.decode_to_file(back, tmp_path / "a.flac")
    out, out_sr = sf.read(str(tmp_path / "a.flac"), dtype="float32")
    ref, _ = codec.decode(back)
    assert out_sr == sr and out.shape == (len(wav),)
    np.testing.assert_allclose(out, ref[0].clamp(-1, 1).numpy(), atol=1.5 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.vqa"]  # no temp files left


def test_decode_onto_a_folder_is_one_line_error(codec, speech_file, tmp_path):
    """An OSError from the atomic rename (``decode e/a.vqa --force`` where ``e/a.wav`` is a folder) is an AudioError."""
    codes = codec.encode_file(speech_file)
    out = tmp_path / "a.wav"
    out.mkdir()
    with pytest.raises(AudioError, match="cannot write audio") as info:
        codec.decode_to_file(codes, out)
    assert str(info.value).startswith(str(out)) and "\n" not in str(info.value)
    assert out.is_dir() and [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary left behind


def test_odd_rates_are_one_line_errors(codec, speech_file, tmp_path):
    """Odd rates (small gcd with the model's 8 kHz) are refused up front instead of allocating gigabytes."""
    import dataclasses

    from vqaudio import tokenfile
    from vqaudio.tokenfile import resampled_length

    codes = codec.encode_file(speech_file)
    with pytest.raises(ConfigError, match="cannot resample 8000 Hz to 8001 Hz") as info:
        codec.decode(codes, 8001)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="8001 Hz"):
        codec.decode_to_file(codes, tmp_path / "out.wav", 8001)
    assert not list(tmp_path.iterdir())  # nothing written
    assert codec.decode(codes, 16000)[1] == 16000  # a common rate still works
    # a token file (valid CRCs) claiming its input was at 44101 Hz: decoding at the original rate is refused
    length = next(n for n in range(codes.length * 44101 // 8000 - 400, 10**9)
                  if -(-resampled_length(n, 8000, 44101) // codes.hop) == codes.frames)
    tokenfile.write(tmp_path / "odd.vqa", dataclasses.replace(codes, orig_sample_rate=44101, length=length))
    odd = load_codes(tmp_path / "odd.vqa")
    with pytest.raises(TokenFileError, match=r"odd\.vqa: original rate: cannot resample 8000 Hz to 44101 Hz") as info:
        codec.decode(odd)
    assert "\n" not in str(info.value)
    assert codec.decode(odd, "model")[1] == 8000
    # input audio at an odd rate
    with pytest.raises(AudioError, match="cannot resample 44101 Hz to 8000 Hz"):
        codec.encode(torch.zeros(1, 1000), 44101)
    sf.write(tmp_path / "odd.wav", np.zeros(1000, np.float32), 44101)
    with pytest.raises(AudioError, match="cannot resample 44101 Hz to 8000 Hz") as info:
        codec.encode_file(tmp_path / "odd.wav")
    assert str(info.value).startswith(str(tmp_path / "odd.wav")) and "\n" not in str(info.value)


def test_truncated_audio_is_refused(codec, speech_file, tmp_path):
    """``head -c 5000 x.wav``: libsndfile reads the bytes present without complaint; encode must not."""
    data = speech_file.read_bytes()
    declared = sf.info(str(speech_file)).frames
    (tmp_path / "tr.wav").write_bytes(data[:5000])
    with pytest.raises(AudioError, match=f"truncated: header says {declared} samples, file holds 2478") as info:
        codec.encode_file(tmp_path / "tr.wav")
    assert str(info.value).startswith(str(tmp_path / "tr.wav")) and "\n" not in str(info.value)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (20000, 2)).astype(np.float32)
    sf.write(tmp_path / "x.aiff", x, 8000)
    (tmp_path / "tr.aiff").write_bytes((tmp_path / "x.aiff").read_bytes()[:30000])
    with pytest.raises(AudioError, match="truncated: header says 20000 samples"):
        codec.encode_file(tmp_path / "tr.aiff")
    # whole files of several layouts still encode, every sample counted
    for name, subtype in (("a.wav", "PCM_24"), ("b.wav", "FLOAT"), ("c.aiff", None), ("d.flac", None), ("e.w64", None)):
        sf.write(tmp_path / name, x, 8000, subtype=subtype)
        assert codec.encode_file(tmp_path / name).length == 20000
    with sf.SoundFile(str(tmp_path / "f.wav"), "w", 8000, 2, "PCM_16") as f:  # written block by block
        for i in range(0, 20000, 3000):
            f.write(x[i : i + 3000])
    assert codec.encode_file(tmp_path / "f.wav").length == 20000


def test_decode_refuses_codes_of_another_model(codec, speech_file, tmp_path):
    codes = codec.encode_file(speech_file)
    save_codes(tmp_path / "a.vqa", codes)
    codes = load_codes(tmp_path / "a.vqa")
    torch.manual_seed(1)
    other = Codec(VQVAE(VQVAEConfig(**TINY)), name="other")
    with pytest.raises(TokenFileError, match=r"a\.vqa: encoded with model 'tiny-speech'.*not with 'other'"):
        other.decode(codes)
    bigger = Codec(VQVAE(VQVAEConfig(**{**TINY, "n_q": 2})), name="two")
    bigger.sha256 = codec.sha256  # same identity, fewer levels: still refused
    with pytest.raises(TokenFileError, match="4 quantiser levels but model 'two' has 2"):
        bigger.decode(codes)


def test_input_errors_are_one_line(codec, tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        codec.encode(torch.tensor([[0.0, float("nan")] * 100]), 8000)
    with pytest.raises(AudioError, match="empty"):
        codec.encode(torch.zeros(1, 0), 8000)
    with pytest.raises(AudioError, match="sample rate"):
        codec.encode(torch.zeros(1, 100), None)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x10\0\0\0WAVEjunkjunk")
    (tmp_path / "empty.wav").write_bytes(b"")
    np.save(tmp_path / "s.npy", np.zeros((100, 1), np.float32))
    for name, expect in (("bad.wav", "cannot read audio"), ("empty.wav", "empty"), ("s.npy", "series file"),
                         ("missing.wav", "no such file")):
        with pytest.raises(AudioError, match=expect) as info:
            codec.encode_file(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and "\n" not in str(info.value)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2] * 5000, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        codec.encode_file(tmp_path / "nan.wav")


def test_load_codec_errors(tmp_path, ckpt, monkeypatch):
    from vqaudio import registry

    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path / "empty")  # an install without the shipped model
    with pytest.raises(CheckpointError, match="not shipped"):
        load_codec("speech-8k")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="unknown model 'nope'"):
        load_codec("nope")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_codec(tmp_path)
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(ckpt, tampered)
    weights = next(tampered.glob("model-*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_codec(tampered)
    exp = tmp_path / "exp"
    shutil.copytree(ckpt, exp / "best")
    assert load_codec(exp).name == "exp"


# --- series --------------------------------------------------------------------------------------

def test_series_codec_chunked_with_global_stats(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=3, hidden=8, max_hidden=16, dim=8, n_q=2,
                              codebook_size=32, strides=[2, 2], kmeans_init=False))
    codec = Codec(model, name="series", chunk_steps=2000)
    t = torch.arange(30_001, dtype=torch.float32)
    x = torch.stack([100 + 5 * torch.sin(t / 37), -3 + 0.01 * t, torch.randn(len(t)) * 0.5])  # [3, T]
    codes = codec.encode(x)
    stats = model.coding_stats(x[None])  # the whole series' statistics
    whole = model.encode(x[None], stats=stats)
    assert codes.items == 1 and codes.kind == "series" and codes.sample_rate is None
    assert (codes.codes != whole).any(1).sum().item() <= 0.001 * whole.shape[-1]
    # recorded in float64 (the mean subtracted before float32: a series far from zero keeps its steps)
    np.testing.assert_allclose(codes.stats["mean"], x.double().mean(-1).tolist(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(codes.stats["std"], stats.std.flatten().tolist(), rtol=1e-6)
    naive = torch.cat([model.encode(x[None, :, i : i + 1000]) for i in range(0, len(t), 1000)], -1)
    assert (naive != whole).any(1).sum().item() > 100  # per-chunk statistics would give other codes
    np.save(tmp_path / "x.npy", x.T.numpy())
    assert torch.equal(codec.encode_file(tmp_path / "x.npy").codes, codes.codes)
    save_codes(tmp_path / "x.vqa", codes)
    y, rate = codec.decode(load_codes(tmp_path / "x.vqa"))
    assert rate is None and y.shape == x.shape and y.dtype == torch.float64  # series decode at the float64 offset
    torch.testing.assert_close(y.float(), model.decode(whole, len(t), stats)[0], atol=1e-4, rtol=1e-5)
    with pytest.raises(AudioError, match="2 channel"):
        codec.encode(x[:2])
    with pytest.raises(AudioError, match="codes series"):
        codec.encode_file(ROOT / "tests" / "no.wav")


# --- memory on a 1-hour file ---------------------------------------------------------------------

@pytest.mark.slow
def test_one_hour_file_under_1gb_rss(tmp_path, ckpt, speech_40s):
    """Encode and decode a 1-hour 16 kHz file (tiled speech) in a fresh process: peak RSS < 1 GB.

    Whole-file processing would need the 115 MB signal at 8 kHz plus ~1 GB per encoder activation
    (8 channels x 28.8 M samples x 4 bytes) — streaming keeps it to a chunk's worth."""
    src = tmp_path / "hour.wav"
    piece = AF.resample(speech_40s, 8000, 16000)[0].numpy()
    with sf.SoundFile(str(src), "w", 16000, 1, "PCM_16") as f:
        for _ in range(math.ceil(3600 * 16000 / len(piece))):
            f.write(piece)
    assert sf.info(str(src)).duration >= 3600
    threads = int(os.environ.get("VQAUDIO_TEST_THREADS", "1"))  # 1: fast on a small shared machine
    # The process's own memory is its anonymous RSS, sampled by a thread (the kernel keeps no peak of
    # it). Total RSS also counts the resident pages of torch's mapped CUDA/CPU libraries (500-650 MiB
    # here, more when they are fresh in the page cache), which no streaming design controls.
    script = textwrap.dedent(f"""
        import resource, sys, threading, time, torch
        sys.path.insert(0, {str(ROOT)!r})
        torch.set_num_threads({threads})
        from vqaudio.codec import load_codec, save_codes, load_codes

        def anon_kb():
            with open('/proc/self/status') as f:
                return next(int(l.split()[1]) for l in f if l.startswith('RssAnon:'))

        peak_anon, done = [anon_kb()], threading.Event()
        def sample():
            while not done.is_set():
                peak_anon[0] = max(peak_anon[0], anon_kb())
                time.sleep(0.02)
        threading.Thread(target=sample, daemon=True).start()
        codec = load_codec({str(ckpt)!r})
        codes = codec.encode_file({str(src)!r})
        save_codes({str(tmp_path / "hour.vqa")!r}, codes)
        codec.decode_to_file(load_codes({str(tmp_path / "hour.vqa")!r}), {str(tmp_path / "out.wav")!r})
        done.set()
        print(codes.frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, max(peak_anon[0], anon_kb()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    frames, peak_kb, anon_peak_kb = map(int, out.stdout.split())
    print(f"1 hour: peak anonymous RSS {anon_peak_kb / 1024:.0f} MiB, peak total RSS {peak_kb / 1024:.0f} MiB")
    assert frames == math.ceil(sf.info(str(src)).frames / 2 / 32)
    assert sf.info(str(tmp_path / "out.wav")).frames == sf.info(str(src)).frames
    assert anon_peak_kb < 1024 * 1024, f"peak anonymous RSS {anon_peak_kb / 1024:.0f} MiB"
    assert peak_kb < 1536 * 1024, f"peak total RSS {peak_kb / 1024:.0f} MiB"


def test_inference_copy_matches_the_checkpoint_model(codec, ckpt, speech_40s):
    """The codec bakes weight norm into plain weights: same codes and audio as the model as loaded."""
    from vqaudio.checkpoint import load_model

    original = load_model(ckpt)
    x = speech_40s[None, :, :40_000]
    codes = original.encode(x)
    assert torch.equal(codec.model.encode(x), codes)
    torch.testing.assert_close(codec.model.decode(codes), original.decode(codes), atol=1e-6, rtol=1e-5)
    assert codec.sha256 == original.checkpoint_sha256 and codec.config.weight_norm
