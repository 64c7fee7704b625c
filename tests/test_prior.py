"""The prior as a library: Markov tokens, windows, the training task, token extraction cache, sampling, CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from vqaudio import tokenfile
from vqaudio.checkpoint import save_model
from vqaudio.cli import main as cli
from vqaudio.errors import AudioError, ConfigError, TokenFileError, VQAudioError
from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.prior import (
    PriorTask,
    TokenCorpus,
    TokenWindows,
    codec_meta,
    extract_tokens,
    load_prior,
    markov_tokens,
    sample,
    split_corpus,
    train_prior,
    unigram_bits,
)


def _small(K: int, n_q: int, n_labels: int = 0, **kw) -> WaveNetConfig:
    return WaveNetConfig(codebook_size=K, n_q=n_q, residual_channels=32, gate_channels=64, skip_channels=32,
                         head_channels=64, layers=6, cycle=3, n_labels=n_labels, **kw)


def test_unigram_bits_and_windows() -> None:
    seq = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3], [5, 5, 5, 5, 5, 5, 5, 5]])
    assert unigram_bits([seq], 8) == pytest.approx((2.0 + 0.0) / 2)
    corpus = TokenCorpus([seq, seq[:, :3]], [0, 1], ["a", "b"])
    win = TokenWindows(corpus, 5, 3)
    assert len(win) == 2 + 1  # starts 0, 3 of the 8-frame sequence; one padded window of the 3-frame one
    last = win[2]
    assert last["codes"].shape == (2, 5) and last["mask"].tolist() == [True, True, True, False, False]
    assert int(last["label"]) == 1 and torch.equal(win[1]["codes"], seq[:, 3:8])


def test_markov_tokens_structure() -> None:
    codes, labels = markov_tokens(4, 300, 16, n_q=2, branching=2, seed=1, n_labels=2)
    assert codes.shape == (4, 2, 300) and set(labels.tolist()) <= {0, 1}
    again, _ = markov_tokens(4, 300, 16, n_q=2, branching=2, seed=1, n_labels=2)
    assert torch.equal(codes, again)
    for i in range(4):  # every token has at most `branching` successors within a label
        succ: dict[int, set[int]] = {}
        for a, b in zip(codes[i, 0, :-1].tolist(), codes[i, 0, 1:].tolist(), strict=True):
            succ.setdefault(a, set()).add(b)
        assert max(len(s) for s in succ.values()) <= 2


def test_split_keeps_files_apart() -> None:
    corpus = TokenCorpus([torch.zeros(1, 4, dtype=torch.long)] * 6, [0] * 6, ["a", "a", "b", "c", "d", "e"])
    tr, va = split_corpus(corpus, 0.2)
    assert set(tr.sources).isdisjoint(va.sources) and len(tr) + len(va) == 6 and len(va) >= 1
    with pytest.raises(ConfigError):
        split_corpus(TokenCorpus([torch.zeros(1, 4, dtype=torch.long)], [0], ["a"]))


def test_task_training_beats_unigram_entropy() -> None:
    """A short run on Markov tokens (n_q=2, labels) brings held-out NLL well under the unigram entropy."""
    torch.manual_seed(0)
    K, Q = 32, 2
    codes, labels = markov_tokens(20, 160, K, Q, branching=3, seed=0, n_labels=2)
    corpus = TokenCorpus(list(codes), labels.tolist(), [f"f{i}" for i in range(20)])
    train, valid = split_corpus(corpus, 0.25)
    uni = unigram_bits(train.seqs, K)
    task = PriorTask(WaveNetPrior(_small(K, Q, 2)), uni)
    valid_dl = DataLoader(TokenWindows(valid, 80), batch_size=16)
    before = task.validate(valid_dl)["nll_bits"]
    opt = torch.optim.Adam(task.model.parameters(), 3e-3)
    for _ in range(5):
        for batch in DataLoader(TokenWindows(train, 64, 32), batch_size=16, shuffle=True):
            loss, metrics = task.training_step(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = task.validate(valid_dl)
    assert before > uni - 0.2  # an untrained prior is no better than the unigram
    assert after["unigram_bits"] == uni and after["tokens"] == valid.tokens
    assert after["nll_bits"] < uni - 1.0, (after, uni)
    assert math.isclose(metrics["nll_bits"], float(loss.detach()) / math.log(2), rel_tol=1e-6)


# ---- with a (tiny, untrained) codec --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    from vqaudio.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=8, max_hidden=16, dim=8, n_q=2, codebook_size=16, strides=[2, 4]))
    with torch.no_grad():  # one training-mode pass: k-means initialises the codebooks (the encoder stays random)
        t = torch.arange(4096) / 8000
        model.train()(torch.stack([0.5 * torch.sin(2 * math.pi * (200 + 300 * i) * t * (1 + t)) for i in range(8)])[:, None])
    return save_model(tmp_path_factory.mktemp("codec") / "tiny", model.eval())


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    """Six 8 kHz files in two label folders: notes of 220 / 330 Hz ("low" / "high") with vibrato and noise."""
    rng = np.random.default_rng(0)
    for i in range(6):
        d = tmp_path / "data" / ("low" if i % 2 else "high")
        d.mkdir(parents=True, exist_ok=True)
        t = np.arange(8000 + 800 * i) / 8000
        f0 = (220 if i % 2 else 330) * (1 + 0.02 * i)
        phase = 2 * np.pi * f0 * t + 0.5 * np.sin(2 * np.pi * 5 * t + i)
        wav = 0.5 * np.sin(phase) + 0.2 * np.sin(2 * phase) + 0.01 * rng.standard_normal(t.size)
        sf.write(d / f"x{i}.wav", wav.astype(np.float32), 8000)
    return tmp_path / "data"


def test_extract_tokens_cached(codec_dir: Path, audio_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from vqaudio.codec import load_codec

    codec = load_codec(codec_dir)
    corpus = extract_tokens(codec, audio_dir, tmp_path / "cache", labels=True)
    assert len(corpus) == 6 and corpus.label_names == ["high", "low"]
    assert corpus.labels == [0, 0, 0, 1, 1, 1]  # sorted: high/x0 x2 x4, low/x1 x3 x5
    assert corpus.seqs[0].shape == (2, math.ceil(8000 / codec.hop)) and corpus.codec["sha256"] == codec.sha256
    entries = sorted((tmp_path / "cache").rglob("*.vqa"))
    assert len(entries) == 6 and all(codec.sha256[:16] in str(p) for p in entries)
    # second run: everything from the cache, no encoding
    monkeypatch.setattr(type(codec), "encode_file", lambda *a, **k: pytest.fail("re-encoded a cached file"))
    again = extract_tokens(codec, audio_dir, tmp_path / "cache", labels=True)
    assert all(torch.equal(a, b) for a, b in zip(corpus.seqs, again.seqs, strict=True))
    # a corrupted cache entry is re-encoded, not trusted
    entries[0].write_bytes(entries[0].read_bytes()[:-3])
    monkeypatch.undo()
    third = extract_tokens(codec, audio_dir, tmp_path / "cache", labels=True)
    assert all(torch.equal(a, b) for a, b in zip(corpus.seqs, third.seqs, strict=True))
    tokenfile.read(entries[0])  # repaired
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio"):
        extract_tokens(codec, tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such file"):
        extract_tokens(codec, tmp_path / "missing")



def test_extract_tokens_from_a_manifest(codec_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    """A manifest gives the files it lists, in order; labels come from the sub-folders below the listed files'
    common folder (a manifest elsewhere listing absolute paths) or below the manifest's own folder."""
    from vqaudio.codec import load_codec

    codec = load_codec(codec_dir)
    listed = sorted(audio_dir.rglob("*.wav"), reverse=True)[:4]
    elsewhere = tmp_path / "lists" / "some.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("# four files\n" + "\n".join(str(p) for p in listed) + "\n")
    corpus = extract_tokens(codec, elsewhere, labels=True)
    assert corpus.sources == [str(p) for p in listed] and corpus.label_names == ["high", "low"]
    assert corpus.labels == [["high", "low"].index(p.parent.name) for p in listed]
    beside = audio_dir / "train.lst"
    beside.write_text("\n".join(p.relative_to(audio_dir).as_posix() for p in listed))
    assert extract_tokens(codec, beside, labels=True).labels == corpus.labels
    (tmp_path / "bad.scp").write_text("nope.wav\n")
    with pytest.raises(AudioError, match="missing"):
        extract_tokens(codec, tmp_path / "bad.scp")

@pytest.fixture
def prior_dir(codec_dir: Path, tmp_path: Path) -> Path:
    from vqaudio.codec import load_codec

    codec = load_codec(codec_dir)
    torch.manual_seed(0)
    model = WaveNetPrior(_small(16, 2, 2, label_names=["high", "low"], codec=codec_meta(codec)))
    return save_model(tmp_path / "prior", model)


def test_sample_writes_tokens_and_audio(prior_dir: Path, codec_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = sample(prior_dir, str(codec_dir), n=2, seconds=0.1, top_p=0.9, seed=3, label="low", out_dir=out)
    assert [p.name for p in paths] == ["sample_000.vqa", "sample_000.wav", "sample_001.vqa", "sample_001.wav"]
    codes = tokenfile.read(paths[0])
    frames = math.ceil(0.1 * 8000 / 8)
    assert codes.codes.shape == (1, 2, frames) and codes.hop == 8
    wav, sr = sf.read(paths[1])
    assert sr == 8000 and wav.shape == (frames * 8,)
    again = sample(prior_dir, str(codec_dir), n=2, seconds=0.1, top_p=0.9, seed=3, label=1, out_dir=tmp_path / "o2")
    assert torch.equal(tokenfile.read(again[0]).codes, codes.codes)  # seeded; label by name or id
    # primed: the output starts with the prime's tokens
    primed = sample(prior_dir, None, n=1, frames=5, seed=0, prime=paths[0], label=0, out_dir=tmp_path / "o3")
    assert [p.suffix for p in primed] == [".vqa"]  # no codec: tokens only
    pc = tokenfile.read(primed[0]).codes
    assert pc.shape == (1, 2, frames + 5) and torch.equal(pc[:, :, :frames], codes.codes)
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_sample_user_errors(prior_dir: Path, codec_dir: Path, tmp_path: Path) -> None:
    kw = {"n": 1, "frames": 4, "out_dir": tmp_path / "o"}
    with pytest.raises(ConfigError, match="label"):
        sample(prior_dir, **kw)
    with pytest.raises(ConfigError, match="out of range"):
        sample(prior_dir, label=2, **kw)
    with pytest.raises(ConfigError, match="unknown label"):
        sample(prior_dir, label="mid", **kw)
    with pytest.raises(VQAudioError, match="no such prior"):
        sample(tmp_path / "nope", label=0, **kw)
    with pytest.raises(ConfigError, match="prime file does not exist"):
        sample(prior_dir, label=0, prime=tmp_path / "missing.vqa", **kw)
    # a prime encoded by another codec is refused, naming the file
    from vqaudio.codec import load_codec
    from vqaudio.models.vqvae import VQVAE, VQVAEConfig

    other = load_codec(save_model(tmp_path / "other", VQVAE(VQVAEConfig(hidden=8, max_hidden=16, dim=8, n_q=2,
                                                                        codebook_size=16, strides=[2, 4]))))
    foreign = tmp_path / "foreign.vqa"
    tokenfile.write(foreign, other.encode(torch.randn(1, 800) * 0.1, 8000))
    with pytest.raises(TokenFileError, match="foreign.vqa"):
        sample(prior_dir, label=0, prime=foreign, **kw)
    with pytest.raises(ConfigError, match="not the prior's codec"):
        sample(prior_dir, other, label=0, **kw)
    # a prior without codec metadata (synthetic tokens) still needs a codec that can decode its tokens
    bare = save_model(tmp_path / "bare", WaveNetPrior(_small(32, 2)))
    with pytest.raises(ConfigError, match="records no codec"):
        sample(bare, **kw)
    with pytest.raises(ConfigError, match="cannot decode"):
        sample(bare, other, **kw)


def test_sample_cli(prior_dir: Path, codec_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    rc = cli(["sample", "--prior", str(prior_dir), "--codec", str(codec_dir), "-n", "2", "--seconds", "0.05",
              "--top-k", "5", "--temperature", "0.8", "--seed", "1", "--label", "high", "-o", str(out)])
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == [
        "sample_000.vqa", "sample_000.wav", "sample_001.vqa", "sample_001.wav"]
    capsys.readouterr()
    assert cli(["sample", "--prior", str(prior_dir), "-n", "1", "--frames", "3", "--top-p", "1.5", "-o", str(out)]) == 2
    assert "--top-p" in capsys.readouterr().err
    assert cli(["sample", "--prior", str(prior_dir), "-n", "1", "--frames", "3", "--label", "7", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "label 7 out of range" in err and len(err.strip().splitlines()) == 1


def test_sample_does_not_overwrite_without_force(prior_dir: Path, codec_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "keep"
    out.mkdir()
    (out / "sample_001.wav").write_bytes(b"the user's take")  # only one of the outputs exists
    argv = ["sample", "--prior", str(prior_dir), "--codec", str(codec_dir), "-n", "2", "--frames", "3", "--seed", "1",
            "--label", "0", "-o", str(out)]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / "sample_001.wav") in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["sample_001.wav"]  # nothing written, nothing replaced
    assert (out / "sample_001.wav").read_bytes() == b"the user's take"
    with pytest.raises(ConfigError, match="already exists"):
        sample(prior_dir, str(codec_dir), n=2, frames=3, label=0, out_dir=out)
    assert [p.name for p in sample(prior_dir, None, n=2, frames=3, label=0, out_dir=out, prefix="x")] == [
        "x_000.vqa", "x_001.vqa"]  # other names in the folder are fine
    for p in out.glob("x_*"):
        p.unlink()
    assert cli(argv + ["--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "sample_000.vqa", "sample_000.wav", "sample_001.vqa", "sample_001.wav"]
    assert (out / "sample_001.wav").read_bytes() != b"the user's take"
    capsys.readouterr()
    assert cli(argv) == 2  # a second run into the same folder is refused too
    assert "sample_000.vqa: output already exists (and 3 more)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli(argv[:-1] + [str(tmp_path / "file" / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(tmp_path / "file") in err


def test_sample_cli_bad_device_and_length(prior_dir: Path, codec_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "o"
    base = ["sample", "--prior", str(prior_dir), "--codec", str(codec_dir), "--label", "0", "-o", str(out)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    cases = [(["--frames", "3", "--device", "gpu"], "--device must be cpu, cuda, cuda:N, mps or auto, got 'gpu'"),
             (["--frames", "3", "--device", "cuda"], "--device cuda: no CUDA GPU is available"),
             (["--frames", "3", "--device", "cuda:x"], "--device must be"),
             (["--seconds", "1e308"], "--seconds must be a finite number in (0, 86400s]"),
             (["--seconds", "inf"], "--seconds must be"), (["--seconds", "nan"], "--seconds must be"),
             (["--seconds", "-1"], "--seconds must be"), (["--seconds", "86401"], "--seconds must be"),
             (["--frames", "0"], "--frames must be an integer in [1, 86400000]"),
             (["--frames", str(10**30)], "--frames must be"),
             (["--frames", "3", "--temperature", "nan"], "--temperature must be")]
    for args, message in cases:
        assert cli(base + args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("vqaudio sample: error:") and message in err and "\n" not in err, (args, err)
    assert not out.exists()
    with pytest.raises(ConfigError, match="--frames must be"):
        sample(prior_dir, None, n=1, frames=2.5, label=0, out_dir=out)
    assert [p.name for p in sample(prior_dir, None, n=1, frames=np.int64(2), label=0, out_dir=out)] == ["sample_000.vqa"]


# ---- training through vqaudio.train.fit --------------------------------------------------------------------
def _markov_vqa_dir(codec_dir: Path, root: Path, n_files: int = 10, frames: int = 200) -> Path:
    """Markov token sequences written as .vqa files of the tiny codec (K=16, n_q=2), two label folders."""
    from vqaudio.codec import load_codec

    codec = load_codec(codec_dir)
    codes, labels = markov_tokens(n_files, frames, 16, n_q=2, branching=2, seed=0, n_labels=2)
    template = codec.encode(torch.zeros(1, 64), 8000)
    for i in range(n_files):
        d = root / f"spk{int(labels[i])}"
        d.mkdir(parents=True, exist_ok=True)
        template.codes, template.length = codes[i : i + 1], frames * codec.hop
        tokenfile.write(d / f"m{i}.vqa", template)
    return root


def test_train_prior_on_markov_tokens_and_resume(codec_dir: Path, tmp_path: Path) -> None:
    from vqaudio.train import TrainConfig

    data = _markov_vqa_dir(codec_dir, tmp_path / "tokens")
    arch = _small(16, 2)
    cfg = TrainConfig(steps=60, batch_size=8, lr=3e-3, schedule="constant", valid_every=30, checkpoint_every=30,
                      log_every=10, progress=False, device="cpu")
    r = train_prior(str(codec_dir), data, tmp_path / "exp", arch, cfg, seq_len=64, labels=True, valid_fraction=0.2)
    assert r["files"] == {"train": 8, "valid": 2} and r["tokens"]["valid"] == 2 * 2 * 200
    assert r["valid_nll_bits"] < r["unigram_bits"] - 1.0, r
    assert r["unigram_xent_bits"] > r["unigram_bits"] - 0.2  # the held-out unigram baseline is no better
    prior = load_prior(tmp_path / "exp")
    assert prior.cfg.n_labels == 2 and prior.cfg.label_names == ["spk0", "spk1"] and prior.cfg.codec["n_q"] == 2
    assert (tmp_path / "exp" / "log.jsonl").is_file()
    with pytest.raises(ConfigError, match="resume"):
        train_prior(str(codec_dir), data, tmp_path / "exp", arch, cfg, seq_len=64, labels=True, valid_fraction=0.2)
    more = dataclasses.replace(cfg, steps=70)
    r2 = train_prior(str(codec_dir), data, tmp_path / "exp", None, more, seq_len=64, valid_fraction=0.2, resume=True)
    assert r2["step"] == 70 and load_prior(tmp_path / "exp" / "last").cfg.label_names == ["spk0", "spk1"]


def test_train_prior_cli_on_codec_tokens(codec_dir: Path, audio_dir: Path, tmp_path: Path, capsys) -> None:
    """Real codec tokens (tiny untrained codec on chirps): extraction, fit, report line, then vqaudio sample."""
    exp = tmp_path / "exp"
    rc = cli(["train-prior", "--codec", str(codec_dir), "--data", str(audio_dir), "--exp", str(exp), "--steps", "300",
              "--batch-size", "8", "--lr", "3e-3", "--seq-len", "64", "--valid-every", "150", "--layers", "4",
              "--cycle", "4", "--residual-channels", "16", "--gate-channels", "32", "--skip-channels", "16",
              "--head-channels", "32", "--valid-fraction", "0.34", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    line = [ln for ln in err.splitlines() if ln.startswith("vqaudio train-prior:")][0]
    nll = float(line.split("held-out NLL ")[1].split()[0])
    uni = float(line.split("unigram entropy ")[1].split()[0])
    assert nll < uni - 0.5, line  # the chirps' tokens are predictable from their past
    assert len(list((exp / "tokens").rglob("*.vqa"))) == 6
    out = tmp_path / "samples"
    assert cli(["sample", "--prior", str(exp), "--codec", str(codec_dir), "-n", "1", "--seconds", "0.02",
                "--seed", "0", "-o", str(out)]) == 0
    assert sorted(p.suffix for p in out.iterdir()) == [".vqa", ".wav"]
    assert cli(["train-prior", "--codec", str(codec_dir), "--data", str(tmp_path / "nope"), "--exp",
                str(tmp_path / "e2"), "--no-progress"]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err


def test_random_crops_are_a_function_of_index_and_epoch() -> None:
    seq = torch.arange(100).view(1, 100)
    win = TokenWindows(TokenCorpus([seq], [0], ["a"]), 16, random_crop=True, seed=3)
    assert len(win) == 7  # starts 0, 16, .., 96 (the last one padded)
    starts = {int(win.sample(2, e)["codes"][0, 0]) for e in range(40)}
    assert starts <= set(range(32, 48)) and len(starts) > 5  # shifted within [start, start + stride)
    assert torch.equal(win.sample(4, 7)["codes"], win.sample(4, 7)["codes"])
    last = win.sample(6, 1)
    assert int(last["codes"][0, 0]) == 96 and last["mask"].sum() == 4  # no room to shift the padded tail


def test_prior_on_fewer_levels_than_the_codec(codec_dir: Path, tmp_path: Path) -> None:
    from vqaudio.codec import load_codec

    codec = load_codec(codec_dir)
    prior = WaveNetPrior(_small(16, 1, codec={**codec_meta(codec), "n_q": 1}))
    paths = sample(prior, codec, n=1, frames=20, seed=0, out_dir=tmp_path)
    assert tokenfile.read(paths[0]).codes.shape == (1, 1, 20)
    assert sf.read(paths[1])[0].shape == (20 * codec.hop,)


def test_train_prior_cli_config_errors(codec_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"layer": 3}}')
    args = ["train-prior", "--codec", str(codec_dir), "--data", str(tmp_path), "--exp", str(tmp_path / "e")]
    assert cli([*args, "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.json" in err and "unknown keys ['layer']" in err and len(err.splitlines()) == 1
    assert cli([*args, "--seq-len", "0"]) == 2
    assert "--seq-len" in capsys.readouterr().err


def _tiny_series_codec(tmp_path: Path, channels: int):
    """An untrained series codec (hop 2, 2 x 8 codes) with ``channels`` channels, saved under ``tmp_path/codec``."""
    from vqaudio.codec import load_codec
    from vqaudio.models.vqvae import VQVAE, VQVAEConfig

    model = VQVAE(VQVAEConfig(kind="series", sample_rate=None, channels=channels, hidden=4, max_hidden=8, dim=4, n_q=2,
                              codebook_size=8, strides=[2]))
    return load_codec(save_model(tmp_path / "codec", model.eval()))


def test_series_codec_tokens_and_samples(tmp_path: Path) -> None:
    """A series codec: tokens of .npy files, samples decoded to .npy (primed ones at the prime's scale)."""
    codec = _tiny_series_codec(tmp_path, channels=3)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(tmp_path / "data" / f"s{i}.npy", (50 + 10 * rng.standard_normal((100, 3))).astype(np.float32))
    corpus = extract_tokens(codec, tmp_path / "data", tmp_path / "cache")
    assert len(corpus) == 3 and corpus.seqs[0].shape == (2, 50)  # one item per series, hop 2
    prior = WaveNetPrior(_small(8, 2, codec=codec_meta(codec)))
    paths = sample(prior, codec, n=2, seconds=40, seed=0, out_dir=tmp_path / "out")  # series: 40 time steps
    assert [p.suffix for p in paths] == [".vqa", ".npy", ".vqa", ".npy"]
    assert np.load(paths[1]).shape == (40, 3)
    primed = sample(prior, codec, n=1, frames=5, seed=0, prime=tmp_path / "data" / "s1.npy", out_dir=tmp_path / "o2")
    x = np.load(primed[1])
    assert x.shape == (110, 3) and abs(x.mean() - 50) < 25  # de-normalised with the prime's statistics


def test_per_channel_series_codec_tokens_and_primed_samples(tmp_path: Path) -> None:
    """A channels=1 series codec (the generalist `series`): each channel of a file is a sequence, and a sample
    primed with a 3-channel file continues its first channel at that channel's scale."""
    codec = _tiny_series_codec(tmp_path, channels=1)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        x = rng.standard_normal((100, 3)) * [1, 10, 100] + [50, -20, 0]
        np.save(tmp_path / "data" / f"s{i}.npy", x.astype(np.float32))
    corpus = extract_tokens(codec, tmp_path / "data", tmp_path / "cache")
    assert len(corpus) == 6 and corpus.seqs[0].shape == (2, 50)  # a sequence per channel
    prior = WaveNetPrior(_small(8, 2, codec=codec_meta(codec)))
    primed = sample(prior, codec, n=1, frames=5, seed=0, prime=tmp_path / "data" / "s1.npy", out_dir=tmp_path / "o")
    x = np.load(primed[1])
    assert x.shape == (110, 1) and abs(x.mean() - 50) < 25  # the first channel's statistics
