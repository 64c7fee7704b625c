"""The default `series` model, shipped in the package: used without --model for .npy/.csv/.ts inputs, any channel
count and length, the original shape and scale back, one-line errors for bad series, aeon .ts files a .vqa per case,
and `vqaudio info`/`models` in bits/sample; without its weights, a one-line error naming the recipe that makes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_line, run

from vqaudio import registry
from vqaudio.codec import load_codec, load_codes
from vqaudio.errors import CheckpointError


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty user model folder: `series` is the shipped model, whatever the user folder holds."""
    root = tmp_path / "user-models"
    monkeypatch.setenv(registry.MODELS_ENV, str(root))
    assert "series" in registry.shipped()
    return root


def table(rng, t: int, c: int) -> np.ndarray:
    return (rng.standard_normal((t, c)).cumsum(0) * rng.uniform(0.1, 100, c) + rng.uniform(-50, 50, c)).astype(np.float32)


def test_series_files_use_the_series_model_by_default(models, tmp_path, speech_file, capsys):
    rng = np.random.default_rng(0)
    x = table(rng, 37, 5)  # T not a multiple of the hop, 5 channels for a channels=1 model
    np.savetxt(tmp_path / "data.csv", x, delimiter=",", header="a,b,c,d,e", comments="")
    np.save(tmp_path / "same.npy", x)
    run("encode", tmp_path / "data.csv", tmp_path / "same.npy", "-o", tmp_path / "codes")
    codec = load_codec("series")
    for name in ("data.csv", "same.npy"):
        codes = load_codes(tmp_path / "codes" / Path(name).with_suffix(".vqa"))
        assert (codes.model, codes.kind, codes.channels, codes.items, codes.length) == ("series", "series", 5, 5, 37)
    run("decode", tmp_path / "codes" / "data.vqa")
    y = np.load(tmp_path / "codes" / "data.decoded.npy")
    assert y.shape == x.shape
    ref = codec.decode(codec.encode(torch.from_numpy(x).T))[0].T  # the API: [C, T] in, [C, T] out
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-3)
    one = tmp_path / "one.npy"
    np.save(one, x[:4, 0])  # one frame of one channel: the shortest series the model codes
    run("encode", one, "-o", tmp_path / "one.decoded.npy")
    assert np.load(tmp_path / "one.decoded.npy").shape == (4,)  # a vector comes back a vector (no [T, 1] broadcast)
    run("encode", one, "-o", tmp_path / "one.vqa", "--bits-per-sample", "4")
    run("convert", tmp_path / "one.vqa", "-o", tmp_path / "one.vqs")
    run("decode", tmp_path / "one.vqs", "-o", tmp_path / "one.npy.npy")
    run("decode", tmp_path / "one.vqs", "-o", tmp_path / "one.csv")
    assert np.load(tmp_path / "one.npy.npy").shape == (4,) and len((tmp_path / "one.csv").read_text().split()) == 5
    talk = tmp_path / "talk.wav"
    talk.write_bytes(speech_file.read_bytes())
    run("encode", talk)  # audio keeps speech-8k
    assert load_codes(talk.with_suffix(".vqa")).model == "speech-8k"
    run("encode", tmp_path / "data.csv", talk, "-o", tmp_path / "mixed", expect=2)
    assert "mix series files and audio" in one_line(capsys)


def test_decoding_restores_each_channel_scale(models):
    """RevIN: an increasing affine change of a channel gives the same codes and the same change of its reconstruction."""
    codec = load_codec("series")
    x = torch.from_numpy(table(np.random.default_rng(1), 50, 3)).T  # [C, T]
    a, b = torch.tensor([[4.0], [0.25], [8.0]]), torch.tensor([[100.0], [-2.0], [0.5]])  # positive scales
    c1, c2 = codec.encode(x), codec.encode(a * x + b)
    assert torch.equal(c1.codes, c2.codes) and c1.codes.shape == (3, 4, 13)
    y1, y2 = codec.decode(c1)[0], codec.decode(c2)[0]
    assert y1.shape == x.shape
    torch.testing.assert_close(y2, a * y1 + b, rtol=1e-4, atol=1e-3)
    assert codec.decode(codec.encode(x, n_q=1))[0].shape == x.shape
    assert [y.shape for y, _ in codec.decode([c1, codec.encode(x[:1, :9])])] == [x.shape, (1, 9)]


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e-3, 1e6])
def test_any_scale_is_coded_like_unit_scale(models, scale):
    """Series in small SI units (1e-6 V, 1e-12 m) come back at their scale: the same codes as at unit scale, and
    the same NMSE (the statistics carry no absolute floor that flattens small values to noise)."""
    codec = load_codec("series")
    x = torch.from_numpy(table(np.random.default_rng(2), 120, 2)).T.double()
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # unit scale
    small = (scale * x).float()
    unit, coded = codec.encode(x.float()), codec.encode(small)
    assert torch.equal(unit.codes, coded.codes)
    y = codec.decode(coded)[0].double()
    nmse = float((y - small.double()).square().sum() / (small.double() - small.double().mean(-1, keepdim=True)).square().sum())
    assert nmse < 0.01, nmse


def test_missing_series_model_is_one_line_naming_the_recipe(tmp_path, monkeypatch, capsys):
    """A package without the weights (a source checkout before they shipped, or a trimmed install)."""
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path / "no-weights")
    np.save(tmp_path / "x.npy", np.arange(10, dtype=np.float32))
    run("encode", tmp_path / "x.npy", expect=2)
    msg = one_line(capsys)
    assert "'series'" in msg and "recipes/series/run.sh" in msg and "--model PATH" in msg
    with pytest.raises(CheckpointError, match="recipes/series/run.sh"):
        load_codec("series")


@pytest.mark.parametrize("bad, problem", [
    ("1,2\n1,4\n1,3\n1,6\n", "channel 0 (of 2) is constant"),
    ("7\n7\n7\n7\n7\n", "the series is constant (7 throughout)"),
    ("1\n2\nnan\n4\n5\n", "NaN"),
    ("1\n2\n", "2 time step(s), but the model codes at least 4"),
    ("1,2\n3,x\n5,6\n7,8\n", "row 2, column 2 is not a number: 'x'"),
    ("1,2\n3\n5,6\n7,8\n", "row 2 has 1 columns"),
    ("1\n2\ninf\n4\n5\n", "Inf"),
    ("1,2\n3,\n5,6\n7,8\n", "row 2, column 2 is empty"),
    ("a,b,c\n", "a header row but no data rows"),
    ("a;b\n1,5;2\n3;4\n5;6\n7;8\n", "write decimals with '.'"),
    ("1e39\n-1e39\n1e39\n0\n", "outside the 1e-30 to 1e30 the model codes"),  # beyond float32
    ("1e-300\n-1e-300\n1e-300\n0\n", "outside the 1e-30 to 1e30 the model codes"),
    ("\n\n", "zero channels"),
])
def test_bad_series_are_one_line_exit_2(models, tmp_path, capsys, bad, problem):
    src = tmp_path / "bad.csv"
    src.write_text(bad)
    run("encode", src, expect=2)
    msg = one_line(capsys)
    assert str(src) in msg and problem in msg, msg
    assert not src.with_suffix(".vqa").exists()


def test_aeon_ts_file_gives_a_vqa_per_case(models, tmp_path, capsys):
    pytest.importorskip("aeon")
    rng = np.random.default_rng(2)
    X = [rng.standard_normal((2, 12 + 3 * i)).cumsum(1) for i in range(5)]  # unequal lengths, 2 channels
    y = ["up", "down", "up", "up", "down"]
    src = tmp_path / "toy.ts"
    head = ["@problemName toy", "@timeStamps false", "@missing false", "@univariate false", "@dimensions 2",
            "@equalLength false", "@classLabel true up down", "@data"]
    src.write_text("\n".join(head + [":".join(",".join(f"{v:.6f}" for v in ch) for ch in x) + f":{lab}"
                                     for x, lab in zip(X, y, strict=True)]) + "\n")
    run("encode", src)
    assert "5 cases" in one_line(capsys)
    out = tmp_path / "toy"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.vqa")) == [
        "down/00001.vqa", "down/00004.vqa", "up/00000.vqa", "up/00002.vqa", "up/00003.vqa"]
    run("encode", src, expect=2)  # the outputs exist
    assert "--force" in one_line(capsys)
    run("decode", out, "-o", tmp_path / "decoded")
    y3 = np.load(tmp_path / "decoded" / "up" / "00003.decoded.npy")
    assert y3.shape == (21, 2)
    (tmp_path / "junk.ts").write_text("@problemName x\n@data\n1,2:a\n")
    run("encode", tmp_path / "junk.ts", expect=2)
    assert "junk.ts" in one_line(capsys)


def test_info_and_models_state_bits_per_sample(models, tmp_path, capsys):
    run("info", "series", "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["bits_per_sample"] == {"1": 2.0, "2": 4.0, "3": 6.0, "4": 8.0} and info["n_q_options"] == [1, 2, 3, 4]
    assert info["min_length"] == 4 and "each channel alone" in info["channels_coded"]
    np.save(tmp_path / "x.npy", table(np.random.default_rng(3), 40, 2))
    run("encode", tmp_path / "x.npy", "--n-q", "2")
    capsys.readouterr()
    run("info", tmp_path / "x.vqa", "--json")
    assert json.loads(capsys.readouterr().out)["bits_per_sample"] == 4.0
    run("models")
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("series "))
    assert "2 4 6 8 bits/sample" in line and "shipped" in line
    run("models", "--json")
    listed = json.loads(capsys.readouterr().out)
    assert listed["default_series"] == "series" and listed["default"] == "speech-8k"


def test_padding_past_a_series_end_is_left_out():
    """A training crop padded past its series' end (NaN, ``SeriesCrops``): the loss, the RevIN statistics and the
    encoder's input are those of the series alone followed by zeros, and the gradients are finite."""
    import torch

    from vqaudio.models import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=1, hidden=8, max_hidden=16, dim=8, n_q=2,
                              codebook_size=16, strides=[2, 2], kmeans_init=False)).eval()
    series = torch.randn(1, 1, 20).cumsum(-1) * 3 + 7
    padded = torch.cat([series, torch.full((1, 1, 12), float("nan"))], -1)
    zeros_after = model.normalize(series)[0]
    zeros_after = torch.cat([zeros_after, torch.zeros(1, 1, 12)], -1)
    xn, stats = model.normalize(padded.nan_to_num(0.0), valid=~padded.isnan())
    torch.testing.assert_close(xn, zeros_after)
    torch.testing.assert_close(stats.mean, model.normalize(series)[1].mean)
    out = model.train()(padded)
    assert out.loss.isfinite() and out.recon.isfinite().all()
    out.loss.backward()
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())
    # the loss is the mean over the 20 real steps only
    model.eval()
    with torch.no_grad():
        out = model(padded)
        yn = (out.recon - stats.mean) / stats.std
        torch.testing.assert_close(out.losses["mse"], (yn[..., :20] - xn[..., :20]).square().mean())


def test_shipped_series_model_card_and_quality_floor():
    """The shipped weights: licensed, small, and far from untrained on a real set. GunPoint's TEST split (in aeon, no
    download) at 2 bits/sample (n_q 1): the model scores NMSE 0.0033 (docs/benchmarks.md), SAX 0.0046, an untrained
    model about 1; the floor catches a broken or wrongly exported model, not a small regression."""
    aeon = pytest.importorskip("aeon.datasets")
    folder = registry.PRETRAINED_DIR / "series"
    card = (folder / "README.md").read_text()
    assert "Apache-2.0" in card and "UCR/UEA" in card and registry.MODELS["series"].licence == "Apache-2.0"
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 5e6
    X, _ = aeon.load_classification("GunPoint", split="test")
    x = torch.from_numpy(np.asarray(X, dtype=np.float32)[:, 0])  # [cases, T]: each case a one-channel series
    codec = load_codec("series")
    y = torch.stack([codec.decode(codec.encode(s[None], n_q=1))[0][0] for s in x])
    nmse = ((x - y) ** 2).sum(1) / ((x - x.mean(1, keepdim=True)) ** 2).sum(1)
    assert y.shape == x.shape and nmse.mean() < 0.01, nmse.mean()


def test_ts_labels_never_share_a_folder(tmp_path):
    """Labels that make the same folder name (``.`` and ``..``, ``a/b`` and ``a_b``) still get a folder each; a label
    never climbs out of the output folder."""
    from vqaudio.ts_files import TsCases, case_outputs

    labels = [".", "..", "a/b", "a_b", ".", "../../evil", "a_b_2"]
    cases = TsCases([torch.zeros(1, 8)] * len(labels), labels)
    outs = case_outputs(tmp_path / "x.ts", cases, tmp_path / "out")
    folders = [p.parent.name for p in outs]
    assert folders == ["_", "__2", "a_b", "a_b_2", "_", "_.._evil", "a_b_2_2"]
    assert all(p.parent.parent == tmp_path / "out" for p in outs)


def test_a_dated_csv_codes_its_values_and_keeps_their_names(models, tmp_path, capsys):
    """`date,temp,rh` (a spreadsheet or pandas export): the dates are the index, not a channel (a warning says so);
    the .vqa keeps the names, `info` shows them, a .vqs stream and the decoded CSV carry them back."""
    x = table(np.random.default_rng(3), 48, 2)
    rows = [f"2024-03-{1 + i // 24:02d} {i % 24:02d}:00,{a:.6g},{b:.6g}" for i, (a, b) in enumerate(x)]
    src = tmp_path / "weather.csv"
    src.write_text("date,temp,rh\n" + "\n".join(rows) + "\n")
    run("encode", src, "-o", tmp_path / "w.vqa")
    assert "row index" not in capsys.readouterr().err  # hourly: rebuilt on decoding, nothing to warn about
    codes = load_codes(tmp_path / "w.vqa")
    assert (codes.channels, codes.length, codes.columns, codes.index) == (2, 48, ["temp", "rh"], "date")
    assert codes.index_values == {"start": "2024-03-01 00:00", "step": 3600e6, "format": "%Y-%m-%d %H:%M"}
    run("info", tmp_path / "w.vqa", "--json")
    info = json.loads(capsys.readouterr().out)
    assert (info["columns"], info["index"]) == (["temp", "rh"], "date")
    run("convert", tmp_path / "w.vqa", "-o", tmp_path / "w.vqs")
    run("decode", tmp_path / "w.vqs", "-o", tmp_path / "w.csv")
    lines = (tmp_path / "w.csv").read_text().splitlines()
    assert lines[0] == "date,temp,rh" and len(lines) == 49
    assert [line.split(",")[0] for line in lines[1:]] == [r.split(",")[0] for r in rows]  # the dates, cell for cell
    y = np.loadtxt(tmp_path / "w.csv", delimiter=",", skiprows=1, usecols=(1, 2))
    assert y.shape == x.shape and float(((y - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()) < 0.05
    run("decode", tmp_path / "w.vqa", "-o", tmp_path / "w.tsv")  # tab-separated, the same table
    assert (tmp_path / "w.tsv").read_text().splitlines()[0] == "date\ttemp\trh"
    assert np.array_equal(np.loadtxt(tmp_path / "w.tsv", delimiter="\t", skiprows=1, usecols=(1, 2)), y)
    run("decode", tmp_path / "w.vqa", "-o", tmp_path / "w.npy")  # a .npy has the values only
    assert np.load(tmp_path / "w.npy").shape == x.shape
    rows[5] = "2024-03-01 05:30" + rows[5][16:]  # an irregular index: dropped, and said so
    src.write_text("date,temp,rh\n" + "\n".join(rows) + "\n")
    run("encode", src, "-o", tmp_path / "irregular.vqa")
    assert "the first column 'date' is the row index" in capsys.readouterr().err
    assert load_codes(tmp_path / "irregular.vqa").index_values is None
    run("decode", tmp_path / "irregular.vqa", "-o", tmp_path / "irregular.csv")
    assert (tmp_path / "irregular.csv").read_text().splitlines()[0] == "temp,rh"
