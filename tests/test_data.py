"""Datasets: sources (folder, manifest, file, aeon), deterministic crops and splits, global batches."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vqaudio.data import AudioCrops, SeriesCrops, build_datasets, read_manifest, split_names
from vqaudio.errors import AudioError, ConfigError
from vqaudio.io import save_audio
from vqaudio.train import GlobalBatches, TrainConfig, lr_at


def test_folder_of_speech(speech_dir):
    train, valid, info = build_datasets(str(speech_dir), 1024, 8000, valid_fraction=0.2)
    assert info["kind"] == "audio" and info["channels"] == 1 and len(train) + len(valid) == 24 and len(valid) >= 1
    assert not set(map(str, train.files)) & set(map(str, valid.files))
    x = train.sample(0, 0)
    assert x.shape == (1, 1024) and x.dtype == torch.float32
    assert torch.equal(train.sample(3, 7), train.sample(3, 7)) and not torch.equal(train.sample(3, 7), train.sample(3, 8))
    assert torch.equal(valid[0], valid[0])
    # the same split again, and upsampled data at another model rate
    again, _, _ = build_datasets(str(speech_dir), 1024, 16000, valid_fraction=0.2)
    assert again.files == train.files and again.sample(0, 0).shape == (1, 1024)


def test_manifest_and_single_file(tmp_path, speech_files):
    lst = tmp_path / "list.txt"
    lst.write_text("# speech\n" + "\n".join(str(p) for p in speech_files[:5]) + "\n\n")
    assert read_manifest(lst) == speech_files[:5]
    train, valid, info = build_datasets(str(lst), 512, 8000, valid_fraction=0.2)
    assert len(train) + len(valid) == 5 and info["kind"] == "audio"
    one, none, _ = build_datasets(str(speech_files[0]), 512, 8000, valid_fraction=0.2)
    assert len(one) == 1 and len(none) == 0
    (tmp_path / "bad.txt").write_text("missing.wav\n")
    with pytest.raises(AudioError, match="missing"):
        build_datasets(str(tmp_path / "bad.txt"), 512, 8000)
    # only .txt/.lst/.list/.scp files are manifests
    (tmp_path / "list.dat").write_text(lst.read_text())
    with pytest.raises(ConfigError, match=r"list.dat: not an audio or series file, nor a manifest \(.list, .lst"):
        build_datasets(str(tmp_path / "list.dat"), 512, 8000)


@pytest.mark.parametrize("text, error", [
    ("", "lists no files"),
    ("# only a comment\n\n", "lists no files"),
    ("a.wav\nsub\n", r"lists 1 folder\(s\), e.g. .*sub \(line 2\)"),
    ("a.wav\n./a.wav\n", r"lists .*a.wav twice \(lines 1 and 2\)"),
    ("a.wav\nnotes.md\n", r"lists 1 file\(s\) that are not an audio or series file, e.g. .*notes.md"),
    ("a.wav\r\ngone.wav\r\n", r"lists 1 missing file\(s\), e.g. .*gone.wav \(line 2\)"),
])
def test_bad_manifests(tmp_path, speech_file, text, error):
    """A manifest listing nothing, a folder, a file twice, a wrong kind of file or a missing file: one clear error."""
    import shutil

    shutil.copy(speech_file, tmp_path / "a.wav")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "m.lst").write_text(text)
    with pytest.raises(AudioError, match=f"m.lst: manifest {error}"):
        build_datasets(str(tmp_path / "m.lst"), 512, 8000)


def test_manifest_bom_crlf_and_names(tmp_path, speech_files):
    """A UTF-8 BOM and CRLF line ends are read; names are relative to the manifest, or to the listed files'
    common folder when it lists files outside its own folder."""
    from vqaudio.data import input_files, relative_names

    (tmp_path / "in" / "x").mkdir(parents=True)
    for n in ("a.wav", "x/b.wav"):
        (tmp_path / "in" / n).symlink_to(speech_files[0])
    (tmp_path / "in" / "m.txt").write_bytes(b"\xef\xbb\xbfa.wav\r\nx/b.wav\r\n")
    files, root = input_files(tmp_path / "in" / "m.txt")
    assert files == [tmp_path / "in" / "a.wav", tmp_path / "in" / "x" / "b.wav"] and root == tmp_path / "in"
    assert relative_names(files, root) == ["a.wav", os.path.join("x", "b.wav")]
    assert relative_names(files, tmp_path / "elsewhere") == ["a.wav", os.path.join("x", "b.wav")]
    assert relative_names([tmp_path / "..x.wav"], tmp_path) == ["..x.wav"]  # a name starting with dots stays


def test_short_and_stereo_audio_padded_and_mono(tmp_path):
    save_audio(tmp_path / "a.wav", torch.full((2, 100), 0.5), 8000)
    ds = AudioCrops([tmp_path / "a.wav"], 8000, 256)
    x = ds.sample(0, 0)
    assert x.shape == (1, 256) and (x[0, :100] - 0.5).abs().max() < 1e-3 and x[0, 100:].abs().max() == 0


def test_series_folder_unequal_lengths(tmp_path):
    for i, t in enumerate([30, 50, 80, 20, 45]):
        np.save(tmp_path / f"s{i}.npy", np.random.default_rng(i).normal(size=(t, 3)))
    train, valid, info = build_datasets(str(tmp_path), None, valid_fraction=0.2)
    assert info["kind"] == "series" and info["channels"] == 3 and info["segment"] == 80 and info["sample_rate"] is None
    x = (train if train.series[0].shape[-1] < 80 else valid)[0]
    assert x.shape == (3, 80)
    short = SeriesCrops([torch.arange(4.0).view(1, 4)], 6)
    assert short[0][:, :4].tolist() == [[0, 1, 2, 3]] and short[0][:, 4:].isnan().all()  # NaN: past the end
    np.save(tmp_path / "other.npy", np.zeros((10, 2)))
    with pytest.raises(AudioError, match="channel"):
        build_datasets(str(tmp_path), 16)


def test_aeon_sets_offline():
    pytest.importorskip("aeon")
    train, valid, info = build_datasets("aeon:BasicMotions", 64, valid_fraction=0.1)
    assert info["channels"] == 6 and len(train) + len(valid) == 80 and train.sample(0, 0).shape == (6, 64)
    train, valid, info = build_datasets("aeon:JapaneseVowels", None)
    assert info["channels"] == 12 and info["segment"] == 29 and valid[0].shape == (12, 29)
    with pytest.raises(AudioError, match="not shipped"):
        build_datasets("aeon:NoSuchSet", 16)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="absent: no such file or folder"):  # a wrong argument, as for encode
        build_datasets(str(tmp_path / "absent"), 16, 8000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio"):
        build_datasets(str(tmp_path / "empty"), 16, 8000)
    with pytest.raises(ConfigError):
        split_names(["a", "b"], 1.5)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty", "rate"])
def test_bad_audio_file_fails_before_training(tmp_path, speech_files, damage):
    """One damaged file among good ones: build_datasets names it at once (headers only), not mid-training."""
    import shutil

    import soundfile as sf

    root = tmp_path / "data"
    root.mkdir()
    for i, f in enumerate(speech_files[:5]):
        shutil.copy(f, root / f"{i}.wav")
    bad = root / "3.wav"
    data = bad.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
        match = "truncated: header says"
    elif damage == "corrupt":
        bad.write_bytes(b"RIFF" + bytes(40))
        match = "cannot read audio"
    elif damage == "empty":
        sf.write(bad, np.zeros((0, 1), np.float32), 8000)
        match = "empty"
    else:
        sf.write(bad, np.zeros((100, 1), np.float32), 8001)
        match = "8001"
    with pytest.raises(AudioError, match=match) as err:
        build_datasets(str(root), 1024, 8000)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_split_is_stable_and_nonempty():
    names = [f"f{i}.wav" for i in range(200)]
    tr, va = split_names(names, 0.1)
    assert 5 <= len(va) <= 40 and sorted(tr + va) == list(range(200))
    tr2, va2 = split_names(names + ["new.wav"], 0.1)  # adding a file does not move the others
    assert set(va) <= set(va2) and set(tr) <= set(tr2)
    assert split_names(["x", "y"], 0.01)[1] != [] and split_names(["x", "y"], 0.99)[0] != []


def test_global_batches_slices_and_resume():
    full = list(GlobalBatches(10, 4, 0, 7, seed=3))
    assert all(len(b) == 4 for b in full) and len(full) == 7
    ranks = [list(GlobalBatches(10, 4, 0, 7, seed=3, rank=r, world=2)) for r in range(2)]
    assert all(r0 + r1 == g for r0, r1, g in zip(*ranks, full, strict=True))  # contiguous slices, rank order
    assert list(GlobalBatches(10, 4, 5, 7, seed=3)) == full[5:]  # resuming at step 5
    keys = [k for b in full for k in b]
    assert sorted(i for i, e in keys if e == 0) == list(range(10))  # each epoch is a permutation
    with pytest.raises(ConfigError):
        GlobalBatches(10, 3, 0, 1, world=2)


def test_global_batches_balanced_by_group():
    """One large group and nine single-item groups: every group is drawn equally often, not every item."""
    groups = ["big"] * 91 + [f"small{i}" for i in range(9)]
    full = list(GlobalBatches(100, 50, 0, 40, seed=1, groups=groups))  # 2000 draws over 20 epochs of 100
    keys = [k for b in full for k in b]
    counts = torch.bincount(torch.tensor([i for i, _ in keys]), minlength=100)
    big, small = counts[:91].sum().item(), counts[91:]
    assert 2000 / 10 * 0.7 < big < 2000 / 10 * 1.3  # about a tenth of the draws, not 91%
    assert (small > 2000 / 10 * 0.7).all() and (small < 2000 / 10 * 1.3).all()
    assert [p for _, p in keys] == list(range(2000))  # the crop key is the position: a repeat gets a new crop
    assert list(GlobalBatches(100, 50, 25, 40, seed=1, groups=groups)) == full[25:]  # resuming is exact
    ranks = [list(GlobalBatches(100, 50, 0, 40, seed=1, rank=r, world=2, groups=groups)) for r in range(2)]
    assert all(r0 + r1 == g for r0, r1, g in zip(*ranks, full, strict=True))
    assert list(GlobalBatches(100, 50, 0, 40, seed=1, groups=list(range(100)))) != full
    with pytest.raises(ValueError, match="group labels"):
        GlobalBatches(100, 50, 0, 1, groups=groups[:-1])
    with pytest.raises(ConfigError, match="balance"):
        TrainConfig(balance="voices")


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_global_batches_balance_power(power):
    """``power``: a group of m items is drawn in proportion to m ** power (0.5: the big group of 81 gets 9 / 18 of
    the draws against its 81 / 90 of the items and 1 / 10 of the groups; 1: in proportion to its items)."""
    groups = ["big"] * 81 + [f"small{i}" for i in range(9)]
    full = list(GlobalBatches(90, 50, 0, 80, seed=2, groups=groups, power=power))  # 4000 draws
    counts = torch.bincount(torch.tensor([i for b in full for i, _ in b]), minlength=90)
    share = counts[:81].sum().item() / 4000
    expected = 81**power / (81**power + 9)
    assert abs(share - expected) < 0.03, (share, expected)
    assert list(GlobalBatches(90, 50, 30, 80, seed=2, groups=groups, power=power)) == full[30:]  # resuming is exact
    assert full != list(GlobalBatches(90, 50, 0, 80, seed=2, groups=groups))  # power 0: every group equally
    with pytest.raises(ConfigError, match="balance_power"):
        TrainConfig(balance="folders", balance_power=1.5)
    with pytest.raises(ConfigError, match="needs balance 'folders'"):
        TrainConfig(balance_power=0.5)


def test_audio_crops_folders(tmp_path):
    """The groups of ``balance: folders``: each file's parent folder."""
    from vqaudio.data import AudioCrops

    files = [tmp_path / "a" / f"{i}.wav" for i in range(3)] + [tmp_path / "b" / "0.wav"]
    crops = AudioCrops(files, 8000, 64)
    assert crops.folders == [str(tmp_path / "a")] * 3 + [str(tmp_path / "b")]


def test_series_crops_folders(tmp_path):
    """Series from a manifest are grouped by folder too (a recipe's sources: one folder per set or family)."""
    for name in ("sets/a/0.npy", "sets/a/1.npy", "synthetic/sines/0.npy"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / name, np.arange(40, dtype=np.float32)[:, None])
    train, _, _ = build_datasets(str(tmp_path), 16, None, valid_fraction=0.0)
    assert isinstance(train, SeriesCrops)
    assert sorted(train.folders) == [os.path.join("sets", "a")] * 2 + [os.path.join("synthetic", "sines")]


def test_lr_schedule():
    cfg = TrainConfig(steps=11, lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s) for s in range(11)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lr_at(TrainConfig(schedule="constant", lr=0.1), 999) == 0.1
    for bad in ({"steps": 0}, {"lr": -1.0}, {"schedule": "step"}, {"betas": [0.9]}, {"nope": 1}):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(bad)
