"""VQVAEConfig.quantizer and its options: the model builds, trains, codes and decodes with every family;
bad options are one-line ConfigErrors; ``vqaudio train`` flags reach the config."""

from __future__ import annotations

import math

import pytest
import torch

import vqaudio.train
from vqaudio.cli import main
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.quantize import ResidualFSQ, ResidualLFQ, ResidualSimVQ, ResidualVQ

TINY = dict(hidden=8, max_hidden=16, dim=8, n_q=2, strides=[2, 4])
FAMILIES = {
    "vq": (dict(codebook_size=16), ResidualVQ),
    "vq-options": (dict(codebook_size=16, rotation_trick=True, codebook_dim=4, l2_normalize=True), ResidualVQ),
    "fsq": (dict(quantizer="fsq", levels=[5, 3, 3], codebook_size=45), ResidualFSQ),
    "lfq": (dict(quantizer="lfq", codebook_size=64, spherical=True, entropy_loss_weight=0.2, inv_temperature=10.0),
            ResidualLFQ),
    "simvq": (dict(quantizer="simvq", codebook_size=16, rotation_trick=True), ResidualSimVQ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_codes_and_decodes(family):
    options, cls = FAMILIES[family]
    torch.manual_seed(0)
    config = VQVAEConfig(**TINY, **options)
    assert VQVAEConfig.from_dict(config.to_dict()) == config
    model = VQVAE(config)
    assert isinstance(model.quantizer, cls)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 1, 200) * 0.1
    for _ in range(2):
        out = model.train()(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.isfinite() and out.stats["usage"].shape == (2,)
    assert all(p.grad is not None for p in model.encoder.parameters())
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (2, 2, 25) and 0 <= int(codes.min()) and int(codes.max()) < config.codebook_size
    torch.testing.assert_close(model.decode(codes, length=200), model(x).recon)
    assert model.bitrate(2) == pytest.approx(8000 / 8 * 2 * math.log2(config.codebook_size))


def test_default_config_is_unchanged_for_older_readers():
    d = VQVAEConfig().to_dict()
    for key in ("quantizer", "rotation_trick", "codebook_dim", "l2_normalize", "levels", "entropy_loss_weight",
                "diversity_gamma", "spherical", "inv_temperature", "noise_dropout"):
        assert key not in d
    assert VQVAEConfig(quantizer="fsq", levels=(8, 5, 5, 5), codebook_size=1000).to_dict()["levels"] == [8, 5, 5, 5]


@pytest.mark.parametrize("options,match", [
    (dict(quantizer="rvq"), "quantizer must be one of"),
    (dict(quantizer="fsq"), "needs levels"),
    (dict(quantizer="fsq", levels=[8, 1], codebook_size=8), "level must be an integer >= 2"),
    (dict(quantizer="fsq", levels=[8, 5, 5, 5]), "set codebook_size to 1000"),
    (dict(quantizer="lfq", codebook_size=1000), "power of two"),
    (dict(codebook_dim=9), r"codebook_dim must be in \[1, dim = 8\]"),
    (dict(codebook_dim=0), r"codebook_dim must be in \[1, dim = 8\]"),
    (dict(quantizer="fsq", levels=[4, 4], codebook_size=16, l2_normalize=True), "l2_normalize applies to quantizer vq"),
    (dict(quantizer="lfq", codebook_size=16, rotation_trick=True), "rotation_trick applies to quantizer vq or simvq"),
    (dict(spherical=True), "spherical applies to quantizer lfq"),
    (dict(levels=[4, 4]), "levels applies to quantizer fsq"),
    (dict(quantizer="lfq", codebook_size=16, entropy_loss_weight=-1.0), "entropy_loss_weight must be >= 0"),
    (dict(levels="8,5"), "invalid value"),
    (dict(quantizer="lfq", codebook_size=16, inv_temperature=0.0), "inv_temperature must be > 0"),
    (dict(inv_temperature=10.0), "inv_temperature applies to quantizer lfq"),
    (dict(quantizer="fsq", levels=[4, 4], noise_dropout=1.5), "noise_dropout must be a number in \\[0, 1\\]"),
    (dict(noise_dropout=0.0), "noise_dropout applies to quantizer fsq"),
])
def test_bad_quantizer_options_are_one_line_config_errors(options, match):
    with pytest.raises(ConfigError, match=match) as err:
        VQVAEConfig(**{**TINY, "codebook_size": 16, **options})
    assert "\n" not in str(err.value)


def run_train_cli(monkeypatch, tmp_path, *flags: str) -> VQVAEConfig | int:
    """``vqaudio train`` with ``flags``; returns the model config it would train (training itself is stubbed)."""
    seen = {}

    def fake_train(data, exp, model_config, train_config, **kwargs):
        seen["config"] = model_config
        return {"step": 0, "steps_per_s": 0.0, "best": None, "best_step": 0, "valid": {}}

    monkeypatch.setattr(vqaudio.train, "train_vqvae", fake_train)
    status = main(["train", "--data", str(tmp_path), "--exp", str(tmp_path / "exp"), *flags])
    return seen.get("config", status)


def test_train_flags_reach_the_model_config(monkeypatch, tmp_path):
    config = run_train_cli(monkeypatch, tmp_path, "--quantizer", "fsq", "--levels", "8,5,5,5")
    assert (config.quantizer, config.levels, config.codebook_size, config.noise_dropout) == ("fsq", [8, 5, 5, 5], 1000, 0.5)
    config = run_train_cli(monkeypatch, tmp_path, "--quantizer", "fsq", "--levels", "8,5,5,5", "--noise-dropout", "0")
    assert config.noise_dropout == 0.0
    config = run_train_cli(monkeypatch, tmp_path, "--codebook-dim", "8", "--l2-normalize", "--rotation-trick",
                           "--codebook-size", "1024")
    assert (config.quantizer, config.codebook_dim, config.l2_normalize, config.rotation_trick) == ("vq", 8, True, True)
    config = run_train_cli(monkeypatch, tmp_path, "--quantizer", "lfq", "--codebook-size", "1024", "--spherical",
                           "--entropy-loss-weight", "0.05", "--inv-temperature", "10")
    assert (config.quantizer, config.spherical, config.entropy_loss_weight, config.inv_temperature) == ("lfq", True, 0.05, 10.0)
    config = run_train_cli(monkeypatch, tmp_path, "--quantizer", "simvq", "--rotation-trick")
    assert (config.quantizer, config.rotation_trick) == ("simvq", True)


def test_train_flags_override_a_config_file(monkeypatch, tmp_path):
    (tmp_path / "model.json").write_text('{"quantizer": "fsq", "levels": [8, 8], "codebook_size": 64, "rotation_trick": false}')
    config = run_train_cli(monkeypatch, tmp_path, "--config", str(tmp_path / "model.json"), "--levels", "4,4,4",
                           "--codebook-size", "64")
    assert config.levels == [4, 4, 4]
    config = run_train_cli(monkeypatch, tmp_path, "--config", str(tmp_path / "model.json"), "--no-rotation-trick")
    assert config.levels == [8, 8] and config.rotation_trick is False


@pytest.mark.parametrize("flags,message", [
    (("--quantizer", "fsq", "--levels", "8,x"), "--levels must be comma-separated integers like 8,5,5,5"),
    (("--quantizer", "fsq", "--levels", "8,1"), "level must be an integer >= 2"),
    (("--quantizer", "lfq", "--codebook-size", "1000"), "power of two"),
    (("--codebook-dim", "65"), "codebook_dim"),
])
def test_bad_train_flags_exit_2_with_one_line(monkeypatch, tmp_path, capsys, flags, message):
    assert run_train_cli(monkeypatch, tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("family", ["fsq", "lfq", "simvq", "vq-options"])
def test_codec_and_token_file_work_with_every_family(family, tmp_path):
    """Chunked encoding, the .vqa file (grouped packing for 45 codes) and decoding, for each family."""
    from vqaudio import tokenfile
    from vqaudio.codec import Codec, load_codes, save_codes

    options, _ = FAMILIES[family]
    torch.manual_seed(1)
    model = VQVAE(VQVAEConfig(**TINY, **options)).eval()
    codec = Codec(model, name=family, chunk_seconds=0.05)  # several chunks
    x = torch.randn(1, 3000) * 0.1
    codes = codec.encode(x, 8000)
    assert torch.equal(codes.codes, model.encode(x[None]))  # chunks give the whole-file codes
    save_codes(tmp_path / "a.vqa", codes)
    back = load_codes(tmp_path / "a.vqa")
    assert torch.equal(back.codes, codes.codes)
    k = model.config.codebook_size
    assert codec.bitrate() == pytest.approx(1000 * 2 * tokenfile.code_bits(k))
    group, bits = tokenfile.packing(k)
    count = codes.codes.numel()
    payload = (count // group * bits + ((k ** (count % group) - 1).bit_length() if count % group else 0) + 7) // 8
    header = len(json_header(codes))
    assert (tmp_path / "a.vqa").stat().st_size == 8 + 6 + header + 4 + payload + 4
    y, sr = codec.decode(back)
    torch.testing.assert_close(y, model.decode(codes.codes, length=3000)[0])


def json_header(codes) -> bytes:
    import json

    return json.dumps(codes.header(), separators=(",", ":"), sort_keys=True).encode()
