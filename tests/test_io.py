"""vqaudio.io: audio/series round trips, resampling, atomic writes, one-line errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.functional.functional import _get_sinc_resample_kernel

from vqaudio.errors import AudioError
from vqaudio.io import (
    MAX_RESAMPLE_KERNEL,
    is_audio_path,
    is_series_path,
    load_audio,
    load_series,
    read_series,
    resample,
    resample_kernel_size,
    resample_problem,
    save_audio,
    save_series,
)


def _one_line(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg


def test_speech_loads(speech_file):
    wav, sr = load_audio(speech_file)
    assert sr == 8000 and wav.dtype == torch.float32 and wav.shape[0] == 1 and wav.shape[1] >= 8000
    assert 0 < wav.abs().max() <= 1
    up, sr2 = load_audio(speech_file, 16000)
    assert sr2 == 8000 and abs(up.shape[1] - 2 * wav.shape[1]) <= 1


def test_resample_preserves_a_tone(tmp_path):
    t = torch.arange(16000) / 16000
    tone = (0.5 * torch.sin(2 * torch.pi * 440 * t)).unsqueeze(0)
    save_audio(tmp_path / "tone.wav", tone, 16000, subtype="FLOAT")
    wav, sr = load_audio(tmp_path / "tone.wav", 8000)
    assert sr == 16000 and wav.shape == (1, 8000)
    ref = (0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(8000) / 8000)).unsqueeze(0)
    assert (wav - ref)[:, 200:-200].abs().max() < 0.01


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_audio_round_trip_stereo(tmp_path, suffix):
    t = torch.arange(4001) / 8000
    x = torch.stack([0.4 * torch.sin(2 * torch.pi * 300 * t), 0.3 * torch.sin(2 * torch.pi * 700 * t + 1)])
    path = tmp_path / f"x{suffix}"
    save_audio(path, x, 8000)
    y, sr = load_audio(path)
    assert sr == 8000 and y.shape == x.shape
    if suffix == ".ogg":  # lossy Vorbis: a clear SNR on each channel
        snr = 10 * torch.log10(x.square().sum(1) / (y - x).square().sum(1))
        assert (snr > 15).all(), snr
    else:  # 16-bit PCM
        assert (y - x).abs().max() < 1 / 2**14
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "a.wav"
    save_audio(path, torch.zeros(1, 10), 8000)
    before = path.read_bytes()
    with pytest.raises(AudioError):
        save_audio(path, torch.full((1, 10), float("nan")), 8000)
    with pytest.raises(AudioError):
        save_audio(path, torch.zeros(1, 10), 0)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_bad_audio_files(tmp_path):
    cases = {}
    cases["missing.wav"] = None
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty.wav"] = "empty"
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    cases["corrupt.wav"] = "cannot read"
    sf.write(tmp_path / "nosamples.wav", np.zeros((0, 1), np.float32), 8000)
    cases["nosamples.wav"] = "0 samples"
    sf.write(tmp_path / "nan.wav", np.array([[0.0], [np.nan], [0.1]], np.float32), 8000, subtype="FLOAT")
    cases["nan.wav"] = "NaN"
    (tmp_path / "x.txt").write_text("hello")
    cases["x.txt"] = "unsupported"
    for name, what in cases.items():
        path = tmp_path / name
        with pytest.raises(AudioError) as err:
            load_audio(path)
        _one_line(err, path)
        assert (what or "no such file") in str(err.value)


def test_truncated_wav(tmp_path, speech_file):
    data = speech_file.read_bytes()
    path = tmp_path / "trunc.wav"
    path.write_bytes(data[:30])
    with pytest.raises(AudioError) as err:
        load_audio(path)
    _one_line(err, path)
    # cut mid-data: libsndfile reads the bytes present without complaint; load_audio (training, eval) must not
    declared = sf.info(str(speech_file)).frames
    path.write_bytes(data[:5000])
    with pytest.raises(AudioError, match=f"truncated: header says {declared} samples, file holds 2478") as err:
        load_audio(path)
    _one_line(err, path)
    path.write_bytes(data)
    assert load_audio(path)[0].shape[-1] == declared


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_series_round_trip(tmp_path, suffix):
    x = torch.randn(3, 57)
    save_series(tmp_path / f"s{suffix}", x)  # float32 written as float32, read back exactly (as float64)
    y = load_series(tmp_path / f"s{suffix}")
    assert y.dtype == torch.float64 and torch.equal(y.float(), x)
    z = 1e9 + torch.randn(3, 57, dtype=torch.float64)  # float64 written as float64: steps of 1 at 1e9 survive
    save_series(tmp_path / f"z{suffix}", z)
    torch.testing.assert_close(load_series(tmp_path / f"z{suffix}"), z, rtol=0, atol=1e-5)


def test_series_layout_rows_are_time(tmp_path):
    (tmp_path / "a.csv").write_text("temp,humidity\n1,10\n2,20\n3,30\n")
    assert load_series(tmp_path / "a.csv").tolist() == [[1, 2, 3], [10, 20, 30]]
    (tmp_path / "semicolons.csv").write_text("temp;humidity\n1;10\n2;20\n3.5;30\n")  # spreadsheet exports
    (tmp_path / "tabs.csv").write_text("1\t10\n2\t20\n3.5\t30\n")
    for name in ("semicolons.csv", "tabs.csv"):
        assert load_series(tmp_path / name).tolist() == [[1, 2, 3.5], [10, 20, 30]]
    np.save(tmp_path / "b.npy", np.arange(5.0))
    assert load_series(tmp_path / "b.npy").shape == (1, 5)
    np.save(tmp_path / "c.npy", np.zeros((7, 2)))
    assert load_series(tmp_path / "c.npy").shape == (2, 7)


def test_csv_names_and_index_columns(tmp_path):
    """A CSV's header names are kept; a first column of dates, times or labels, or pandas' unnamed rising index, is
    the row index and not a channel; a rising column named like data (or a falling 'time') stays a channel."""
    def table(text):
        (tmp_path / "t.csv").write_text(text)
        t = read_series(tmp_path / "t.csv")
        return t.values.tolist(), t.columns, t.index

    assert table("date,value\n2020-01-01 00:00,1.5\n2020-01-01 01:00,2\n") == ([[1.5, 2]], ["value"], "date")
    assert table("2020-01-01,1.5,7\n2020-01-02,2,8\n") == ([[1.5, 2], [7, 8]], None, "")  # no header row
    assert table("when;a;b\nMon;1;2\nTue;3;4\n") == ([[1, 3], [2, 4]], ["a", "b"], "when")
    assert table(",a,b\n0,1,2\n1,3,4\n2,5,6\n") == ([[1, 3, 5], [2, 4, 6]], ["a", "b"], "")  # pandas to_csv
    assert table("Time,x\n0.0,5\n0.5,6\n1.0,4\n") == ([[5, 6, 4]], ["x"], "Time")
    assert table("load,x\n0,5\n1,6\n2,4\n") == ([[0, 1, 2], [5, 6, 4]], ["load", "x"], None)  # not an index name
    assert table("time,x\n3,5\n1,6\n2,4\n") == ([[3, 1, 2], [5, 6, 4]], ["time", "x"], None)  # not rising
    assert table("a,b\n1,2\n3,4\n") == ([[1, 3], [2, 4]], ["a", "b"], None)
    for name in ("Time (s)", "t [ms]", "time_step", "Elapsed-Time", "Sample", "year"):  # names with units, spelled freely
        assert table(f"{name},x\n1990,5\n1991,6\n1992,4\n") == ([[5, 6, 4]], ["x"], name)
    assert table("value (V),x\n0,5\n1,6\n2,4\n")[2] is None
    (tmp_path / "label.csv").write_text("a,label\n1,x\n2,y\n")  # text after the first column is an error
    with pytest.raises(AudioError, match=r"row 1, column 2 \('label'\) is not a number: 'x'") as err:
        load_series(tmp_path / "label.csv")
    _one_line(err, tmp_path / "label.csv")


def test_decoded_csv_keeps_the_names(tmp_path):
    save_series(tmp_path / "o.csv", torch.zeros(2, 3), columns=["temp, °C", "rh"])
    assert (tmp_path / "o.csv").read_text(encoding="utf-8").splitlines()[0] == '"temp, °C",rh'
    assert read_series(tmp_path / "o.csv").columns == ["temp, °C", "rh"]


def test_decoded_csv_is_exact_and_well_formed(tmp_path):
    """float64 cells read back as the same numbers (a series at 1e12 keeps its 1e-3 steps); a name holding a newline
    is quoted; numpy.savetxt's '# ' header and UTF-16 text (Excel's "Unicode text") are read."""
    x = torch.tensor([[1e12 + 0.001, 1e12 + 0.002, 0.1]], dtype=torch.float64)
    save_series(tmp_path / "x.csv", x, columns=["a\nb"])
    t = read_series(tmp_path / "x.csv")
    assert torch.equal(t.values, x) and t.columns == ["a\nb"]
    np.savetxt(tmp_path / "np.csv", np.ones((3, 2)), delimiter=",", header="a,b")
    assert read_series(tmp_path / "np.csv").columns == ["a", "b"]
    (tmp_path / "u16.csv").write_bytes("temp °C,rh\n1,2\n3,4\n".encode("utf-16"))
    assert read_series(tmp_path / "u16.csv").columns == ["temp °C", "rh"]


def test_tsv_files(tmp_path):
    """``.tsv`` reads and writes tab-separated tables (a comma or semicolon in a name is just a character)."""
    (tmp_path / "in.tsv").write_text("t\tflow, l/s\tp; kPa\n0\t1.5\t3\n1\t2.5\t4\n2\t0.5\t5\n")
    t = read_series(tmp_path / "in.tsv")
    assert (t.values.tolist(), t.columns, t.index) == ([[1.5, 2.5, 0.5], [3, 4, 5]], ["flow, l/s", "p; kPa"], "t")
    save_series(tmp_path / "out.tsv", t.values, t.columns)
    lines = (tmp_path / "out.tsv").read_text().splitlines()
    assert lines[0] == "flow, l/s\tp; kPa" and lines[1] == "1.5\t3.0"
    assert torch.equal(load_series(tmp_path / "out.tsv"), t.values) and is_series_path("X.TSV")


def test_bad_series_files(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "nochan.npy", np.zeros((5, 0)))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "trunc.npy").write_bytes((lambda b: b[: len(b) // 2])(_npy_bytes(tmp_path)))
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "words.csv").write_text("a,b\n1,x\n")
    (tmp_path / "only_dates.csv").write_text("2020-01-01\n2020-01-02\n")
    (tmp_path / "mixed_index.csv").write_text("d,v\n2020-01-01,1\n5,2\n")
    (tmp_path / "header_only.csv").write_text("a,b\n")
    (tmp_path / "missing_value.csv").write_text("1,2\n,4\n")
    (tmp_path / "blank_lines.csv").write_text("\n \n\n")
    np.savez(tmp_path / "archive.npz", a=np.ones((9, 2)))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    (tmp_path / "text.npy").write_text("not an npy")
    for name in ["nan.npy", "cube.npy", "nochan.npy", "obj.npy", "trunc.npy", "ragged.csv", "words.csv",
                 "only_dates.csv", "mixed_index.csv", "header_only.csv", "missing_value.csv", "absent.csv", "x.wav",
                 "blank_lines.csv", "archive.npy", "text.npy"]:
        with pytest.raises(AudioError) as err:
            load_series(tmp_path / name)
        _one_line(err, tmp_path / name)


def _npy_bytes(tmp_path):
    np.save(tmp_path / "full.npy", np.zeros(1000))
    return (tmp_path / "full.npy").read_bytes()


def test_path_kinds():
    assert is_audio_path("a/b.WAV") and is_audio_path("x.flac") and not is_audio_path("x.npy")
    assert is_series_path("x.npy") and is_series_path("y.CSV") and not is_series_path("z.wav")


@pytest.mark.parametrize("name, save", [
    ("a.wav", lambda p: save_audio(p, torch.zeros(1, 10), 8000)),
    ("a.npy", lambda p: save_series(p, torch.zeros(1, 10))),
    ("a.csv", lambda p: save_series(p, torch.zeros(1, 10))),
])
def test_write_onto_a_folder_is_one_line_error(tmp_path, name, save):
    """An OSError from the atomic rename (the destination is an existing folder) is an AudioError, not a traceback."""
    path = tmp_path / name
    path.mkdir()
    (path / "keep").write_bytes(b"x")
    with pytest.raises(AudioError, match="cannot write") as info:
        save(path)
    _one_line(info, path)
    assert path.is_dir() and (path / "keep").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind


def test_resample_refuses_rates_whose_filter_is_too_large(tmp_path):
    """8000 -> 8001 Hz needs a [8001, 1, ~8000] filter (244 MiB): a one-line AudioError instead."""
    path = tmp_path / "a.wav"
    save_audio(path, torch.zeros(1, 800), 8000)
    with pytest.raises(AudioError, match="cannot resample 8000 Hz to 8001 Hz") as info:
        load_audio(path, 8001)
    _one_line(info, path)
    with pytest.raises(AudioError, match="cannot resample 44101 Hz to 8000 Hz"):
        resample(torch.zeros(1, 100), 44101, 8000)
    assert resample(torch.zeros(1, 441), 44100, 8000).shape == (1, 80)  # common pairs keep working
    # a lopsided reduced ratio with a small kernel is fine: 44056 Hz (NTSC audio) is 5507:1000 against 8000
    assert resample_problem(44056, 8000) is None and resample_problem(8000, 44056) is None
    assert resample(torch.zeros(1, 44056), 44056, 8000).shape == (1, 8000)
    for a, b in ((44100, 8000), (44056, 8000), (8000, 44056), (48000, 44100), (22050, 16000)):
        kernel, _ = _get_sinc_resample_kernel(a, b, math.gcd(a, b), dtype=torch.float32)  # what the limit is about
        assert resample_kernel_size(a, b) == kernel.numel() <= MAX_RESAMPLE_KERNEL
    assert min(resample_kernel_size(8000, 8001), resample_kernel_size(44101, 8000)) > MAX_RESAMPLE_KERNEL


def test_header_frames(tmp_path, speech_file):
    from vqaudio.io import header_frames

    x = np.zeros((1000, 2), np.float32)
    for name, subtype in (("a.wav", "PCM_16"), ("a.aiff", "PCM_16"), ("b.wav", "PCM_24"), ("c.wav", "FLOAT"), ("d.wav", "ULAW")):
        sf.write(tmp_path / name, x, 8000, subtype=subtype)
        assert header_frames(tmp_path / name) is None  # complete
        whole = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(whole[: len(whole) - 100])
        assert header_frames(tmp_path / f"cut-{name}") == 1000  # the data chunk runs past the end
    # a wrong block_align (libsndfile ignores it for PCM) is not mistaken for truncation
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    raw[32:34] = (2).to_bytes(2, "little")  # should be 4 (2 channels x 16 bits)
    (tmp_path / "ba.wav").write_bytes(raw)
    assert sf.info(str(tmp_path / "ba.wav")).frames == 1000 and header_frames(tmp_path / "ba.wav") is None
    (tmp_path / "ba-cut.wav").write_bytes(raw[:-40])
    assert header_frames(tmp_path / "ba-cut.wav") == 1000
    # a chunk after the sample data (LIST/INFO) is no truncation either
    raw = bytearray((tmp_path / "a.wav").read_bytes()) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    raw[4:8] = (len(raw) - 8).to_bytes(4, "little")
    (tmp_path / "list.wav").write_bytes(raw)
    assert header_frames(tmp_path / "list.wav") is None and load_audio(tmp_path / "list.wav")[0].shape == (2, 1000)
    data = speech_file.read_bytes()
    (tmp_path / "tr.wav").write_bytes(data[:5000])
    assert header_frames(tmp_path / "tr.wav") == sf.info(str(speech_file)).frames > sf.info(str(tmp_path / "tr.wav")).frames
    raw = bytearray((tmp_path / "a.wav").read_bytes())
    i = raw.index(b"data")
    raw[i + 4 : i + 8] = b"\xff\xff\xff\xff"  # a streaming writer's "unknown length"
    (tmp_path / "s.wav").write_bytes(raw)
    assert header_frames(tmp_path / "s.wav") is None
    sf.write(tmp_path / "a.flac", x, 8000)
    assert header_frames(tmp_path / "a.flac") is None and header_frames(tmp_path / "missing.wav") is None
