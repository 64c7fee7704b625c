"""``vqaudio eval`` and :mod:`vqaudio.report`: measured bitrates, n_q sweep, baselines, report files, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vqaudio import baselines as B
from vqaudio import metrics as M
from vqaudio import report
from vqaudio.checkpoint import save_model
from vqaudio.cli import main
from vqaudio.codec import load_codec
from vqaudio.io import load_audio, save_audio
from vqaudio.models import VQVAE, VQVAEConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    """An (untrained) tiny 8 kHz codec checkpoint: hop 32, n_q 3, K 16 (4 bits per code)."""
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=8, max_hidden=16, dim=16, strides=[2, 4, 4], n_q=3, codebook_size=16,
                              kmeans_init=False))
    path = tmp_path_factory.mktemp("codec") / "tiny"
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, speech_files) -> Path:
    """Three real prompts cut to 0.5-0.9 s, one of them at 16 kHz, in nested folders."""
    root = tmp_path_factory.mktemp("evaldata")
    picks = [p for p in speech_files[::53] if load_audio(p)[0].shape[-1] > 8000][:3]
    for i, p in enumerate(picks):
        x = load_audio(p)[0][:, : 4000 + 1000 * i]
        sub = root / f"lang{i % 2}"
        sub.mkdir(exist_ok=True)
        if i == 2:
            save_audio(sub / f"{i}_{p.stem}.flac", torch.nn.functional.interpolate(x[None], scale_factor=2)[0], 16000)
        else:
            save_audio(sub / f"{i}_{p.name}", x, 8000)
    return root


def test_eval_cli_writes_report(tmp_path, codec_dir, eval_dir, capsys):
    out = tmp_path / "report"
    assert main(["eval", "--codec", str(codec_dir), "--data", str(eval_dir), "-o", str(out), "--no-progress"]) == 0
    assert "report" in capsys.readouterr().err
    r = json.loads((out / "report.json").read_text())
    codec = load_codec(codec_dir)
    files = sorted(eval_dir.rglob("*.*"))
    assert r["files"] == [str(f.relative_to(eval_dir)) for f in files]
    assert r["n_qs"] == [1, 2, 3]
    seconds = [load_audio(f)[0].shape[-1] / load_audio(f)[1] for f in files]
    frames = [math.ceil(s * 8000 / 32) for s in seconds]
    for k in (1, 2, 3):
        s = r["systems"][f"vqaudio n_q={k}"]
        payload = sum(math.ceil(f * k * 4 / 8) * 8 for f in frames)  # packed 4-bit codes, whole bytes per file
        assert s["bitrate"] == pytest.approx(payload / sum(seconds))
        assert s["file_bitrate"] > s["bitrate"]  # + JSON header and checksums
        assert abs(s["bitrate"] - codec.bitrate(k)) < 0.02 * codec.bitrate(k)
        p = r["systems"][f"pca n_q={k}"]
        assert p["components"] * p["bits_per_coefficient"] <= 4 * k
        assert set(s["mean"]) >= {"si_snr", "log_mel", "mrstft"}
    # the n_q=3 numbers are those of a plain encode/decode of each file
    name = r["files"][0]
    est, _ = codec.decode(codec.encode_file(files[0]))
    ref = load_audio(files[0])[0]
    assert r["systems"]["vqaudio n_q=3"]["per_file"][name]["log_mel"] == pytest.approx(
        M.log_mel_distance(ref[0], est[0], 8000), rel=1e-5)
    # best/worst by log-mel at the top n_q
    per = r["systems"]["vqaudio n_q=3"]["per_file"]
    assert r["best_file"] == min(per, key=lambda n: per[n]["log_mel"])
    assert r["worst_file"] == max(per, key=lambda n: per[n]["log_mel"])
    counts = np.array(r["codebook"]["counts"])
    assert counts.shape == (3, 16) and (counts.sum(1) == sum(frames)).all()
    for ext in B.EXTERNAL:
        assert (ext.name in r["systems"]) == ext.available()
    for png in ("spectrograms.png", "codebook_usage.png", "rate_curve.png"):
        assert (out / png).read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    for k in (1, 2, 3):
        assert f"| vqaudio n_q={k} |" in md and f"| pca n_q={k} |" in md
    assert "![" in md and "rate_curve.png" in md
    # an existing report is kept unless --force
    before = (out / "report.json").read_bytes()
    argv = ["eval", "--codec", str(codec_dir), "--data", str(eval_dir), "-o", str(out), "--no-progress", "--no-plots", "--n-q", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vqaudio eval: error: {out / 'report.json'}: already exists; pass --force to replace it"
    assert (out / "report.json").read_bytes() == before
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "report.json").read_text())["n_qs"] == [1]


def test_lower_n_q_codes_are_a_prefix(codec_dir, eval_dir):
    """evaluate() decodes codes[:, :k] of one encoding: the same codes as encoding with n_q=k."""
    codec = load_codec(codec_dir)
    f = sorted(eval_dir.rglob("*.wav"))[0]
    full = codec.encode_file(f).codes
    for k in (1, 2):
        assert torch.equal(codec.encode_file(f, n_q=k).codes, full[:, :k])


def test_evaluate_subset_and_skips(monkeypatch, tmp_path, codec_dir, eval_dir):
    monkeypatch.setattr(M, "optional_metrics", lambda: {"pesq": "pesq is not installed", "stoi": "pystoi is not installed"})
    monkeypatch.setattr(B, "available_external", lambda: {c.name: "not on PATH" for c in B.EXTERNAL})
    files, names = report.eval_files(eval_dir)
    r = report.evaluate(load_codec(codec_dir), files, names, n_qs=[2], baselines=("pca", "opus-6k"))
    assert set(r["systems"]) == {"vqaudio n_q=2", "pca n_q=2"}
    assert r["skipped"] == {"pesq": "pesq is not installed", "stoi": "pystoi is not installed", "opus-6k": "not on PATH"}
    assert r["metrics"] == ["si_snr", "log_mel", "mrstft"]
    md = report.write_report(r, tmp_path / "r", plots=False).read_text()
    assert "## Not evaluated" in md and "- opus-6k: not on PATH" in md and "pystoi is not installed" in md
    assert not list((tmp_path / "r").glob("*.png"))
    assert "_audio" not in json.loads((tmp_path / "r" / "report.json").read_text())


def test_pca_fit_on_other_files(tmp_path, codec_dir, eval_dir, speech_files):
    manifest = tmp_path / "fit.txt"
    manifest.write_text("".join(f"{p}\n" for p in speech_files[5:40:5]))
    out = tmp_path / "r"
    assert main(["eval", "--codec", str(codec_dir), "--data", str(eval_dir), "-o", str(out), "--n-q", "1,3",
                 "--baselines", "pca", "--pca-fit", str(manifest), "--pca-max-files", "3", "--no-plots",
                 "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["pca_fit"] == "3 separate files"
    assert set(r["systems"]) == {"vqaudio n_q=1", "vqaudio n_q=3", "pca n_q=1", "pca n_q=3"}


def test_eval_series(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=2, hidden=8, max_hidden=16, dim=8,
                              strides=[2, 2], n_q=2, codebook_size=8, kmeans_init=False))
    save_model(tmp_path / "series_codec", model)
    data = tmp_path / "series"
    data.mkdir()
    t = np.linspace(0, 12, 200)
    for i in range(4):
        np.save(data / f"s{i}.npy", np.stack([np.sin(t + i), np.cos(3 * t) * (i + 1)], 1).astype(np.float32))
    files, names = report.eval_files(data, "series")
    r = report.evaluate(load_codec(tmp_path / "series_codec"), files, names)
    assert r["metrics"] == ["si_snr", "nmse"]
    assert {"codec2-3200", "opus-6k"} <= set(r["skipped"]) and "not applicable" in r["skipped"]["opus-6k"]
    assert r["systems"]["pca n_q=2"]["mean"]["si_snr"] > 10  # smooth series: PCA at 6 bits/frame is decent
    report.write_report(r, tmp_path / "r")
    assert (tmp_path / "r" / "series.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/folder"], "/nonexistent/folder: no such file or folder"),
    (["--n-q", "4"], "n_q must be an integer in [1, 3]"),
    (["--n-q", "one"], "--n-q must look like"),
    (["--baselines", "pca,mp3"], "unknown baseline(s) mp3"),
    (["--max-files", "0"], "--max-files must be >= 1"),
    (["--codec", "/nonexistent/codec"], "model folder does not exist"),
    (["--device", "gpu"], "--device must be cpu, cuda, cuda:N, mps or auto, got 'gpu'"),
    (["--device", "cuda:zero"], "--device must be"),
])
def test_eval_errors_are_one_line(tmp_path, codec_dir, eval_dir, capsys, args, message):
    base = {"--codec": str(codec_dir), "--data": str(eval_dir), "-o": str(tmp_path / "r")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["eval", "--no-progress", "--no-plots"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqaudio eval: error:") and message in err and "\n" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_eval_output_is_a_file_fails_before_evaluating(tmp_path, codec_dir, eval_dir, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("evaluated although the report folder cannot be created")

    monkeypatch.setattr(report, "evaluate", boom)
    out = tmp_path / "taken"
    out.write_text("not a report folder")
    for dst in (out, out / "sub"):
        assert main(["eval", "--codec", str(codec_dir), "--data", str(eval_dir), "-o", str(dst), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("vqaudio eval: error:") and "\n" not in err and f"{out}: is a file, not a folder" in err
    assert out.read_text() == "not a report folder"


def test_eval_cuda_without_a_gpu_is_one_line(tmp_path, codec_dir, eval_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["eval", "--codec", str(codec_dir), "--data", str(eval_dir), "-o", str(tmp_path / "r"), "--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vqaudio eval: error: --device cuda: no CUDA GPU is available here (use --device cpu)"
    assert not (tmp_path / "r").exists()


def test_eval_empty_folder(tmp_path, codec_dir, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert main(["eval", "--codec", str(codec_dir), "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "r")]) == 2
    assert "no audio" in capsys.readouterr().err


def test_json_has_no_nan(tmp_path, codec_dir, eval_dir, monkeypatch):
    """A metric that is undefined on a file (PESQ without speech) is null in report.json and n/a in the table."""
    monkeypatch.setattr(M, "pesq_score", lambda *a, **k: math.nan)
    files, names = report.eval_files(eval_dir)
    r = report.evaluate(load_codec(codec_dir), files, names, n_qs=[1], baselines=(), metrics=("log_mel", "pesq_nb"))
    assert math.isnan(r["systems"]["vqaudio n_q=1"]["mean"]["pesq_nb"])
    md = report.write_report(r, tmp_path / "r", plots=False).read_text()
    text = (tmp_path / "r" / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["systems"]["vqaudio n_q=1"]["mean"]["pesq_nb"] is None
    assert "| n/a |" in md


def test_stereo_file_is_coded_per_channel(tmp_path, codec_dir, eval_dir):
    """A 2-channel file costs twice the bits of its mono version, for the codec and for PCA alike."""
    mono = sorted(eval_dir.rglob("*.wav"))[0]
    x = load_audio(mono)[0]
    save_audio(tmp_path / "stereo.wav", torch.cat([x, 0.5 * x.flip(-1)]), 8000)
    codec = load_codec(codec_dir)
    r = report.evaluate(codec, [mono, tmp_path / "stereo.wav"], ["mono", "stereo"], n_qs=[2], baselines=("pca",),
                        pca_fit=[tmp_path / "stereo.wav", mono])
    for system in ("vqaudio n_q=2", "pca n_q=2"):
        per = r["systems"][system]["per_file"]
        assert per["stereo"]["bitrate"] == pytest.approx(2 * per["mono"]["bitrate"])


def test_bench_quantization_gap(codec_dir, eval_dir, capsys):
    """The decoder on z_e and on 1..n_q codebooks: the n_q rows agree with the codec's own decode path."""
    import importlib.util

    root = Path(__file__).parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("bench_quantization_gap", root / "bench_quantization_gap.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    codec = load_codec(codec_dir)
    x = torch.randn(1, 1, 1000) * 0.1
    recon = bench.reconstructions(codec.model.eval(), x)
    assert list(recon) == ["unquantised", "n_q=1", "n_q=2", "n_q=3"] and all(y.shape == x.shape for y in recon.values())
    for n in (1, 3):  # the same as encode -> decode with n codebooks
        y = codec.model.decode(codec.model.encode(x, n_q=n), x.shape[-1])
        assert torch.allclose(recon[f"n_q={n}"], y, atol=1e-5)
    assert not torch.allclose(recon["unquantised"], recon["n_q=3"], atol=1e-4)
    assert bench.main(["--codec", str(codec_dir), "--data", str(eval_dir)]) == 0
    out = capsys.readouterr().out
    assert "unquantised" in out and "n_q=3" in out and "gap, all codebooks vs unquantised: pesq_nb" in out
    assert bench.main(["--codec", str(codec_dir.parent / "missing")]) == 2


def test_bench_quality_uses_eval(tmp_path, codec_dir, eval_dir, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quality", Path(__file__).parents[1] / "benchmarks/bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "q.json"
    assert bench.main(["--codec", str(codec_dir), "--data", str(eval_dir), "--json", str(out)]) == 0
    r = json.loads(out.read_text())["data"]
    assert r["metrics"] == ["pesq_nb", "stoi", "log_mel"] and r["n_qs"] == [2, 3]
    assert {s["system"] for s in r["systems"].values()} <= {"codec", "external"}
    assert {n for n, s in r["systems"].items() if s["system"] == "external"} == {c.name for c in B.EXTERNAL if c.available()}
    out = capsys.readouterr().out
    assert "vqaudio n_q=3" in out and out.count("\ndata: bar ") == 2
    # several named sets: one table and one verdict pair each
    assert bench.main(["--codec", str(codec_dir), "--set", f"a={eval_dir}", "--set", f"b={eval_dir}", "--n-q", "3",
                       "--json", str(tmp_path / "ab.json")]) == 0
    assert set(json.loads((tmp_path / "ab.json").read_text())) == {"a", "b"}
    out_text = capsys.readouterr().out
    assert "## a: " in out_text and "## b: " in out_text and out_text.count("\nb: bar ") == 2
    assert bench.main(["--codec", str(codec_dir), "--set", "nameless"]) == 2
    assert bench.main(["--codec", str(tmp_path / "missing")]) == 2
    assert bench.main(["--codec", str(codec_dir), "--n-q", "x"]) == 2
    assert "--n-q" in capsys.readouterr().err

    def row(system, bitrate, pesq, stoi, mel, n_q=None):
        return {"system": system, "bitrate": bitrate, "n_q": n_q, "mean": {"pesq_nb": pesq, "stoi": stoi, "log_mel": mel}}

    systems = {"vqaudio n_q=3": row("codec", 2290, 2.5, 0.86, 0.33, 3), "vqaudio n_q=4": row("codec", 3050, 2.7, 0.87, 0.30, 4),
               "codec2-3200": row("external", 3185, 2.6, 0.88, 0.34), "codec2-2400": row("external", 2389, 2.3, 0.85, 0.34)}
    lines = bench.bar_lines(systems)
    assert lines[0].startswith("bar vqaudio n_q=4 (3050 bit/s) vs codec2-3200") and "not met (2/3 metrics)" in lines[0]
    assert "stoi 0.870 vs 0.880 (0.99x, worse)" in lines[0]
    assert lines[1].startswith("bar vqaudio n_q=3 (2290 bit/s) vs codec2-2400") and ": MET:" in lines[1]
    systems["vqaudio n_q=3"]["bitrate"] = 2401  # over the 2.4 kbit/s limit: not compared
    assert bench.bar_lines(systems)[1] == "bar codec2-2400: not evaluated (no vqaudio row <= 2400 bit/s)"
