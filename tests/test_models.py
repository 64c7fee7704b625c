"""Conv encoder/decoder and VQ-VAE: shapes, exact receptive fields, chunked encoding, configs."""

from __future__ import annotations

import json

import pytest
import torch

from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.models.conv import Decoder, Encoder

TINY = dict(hidden=8, max_hidden=16, dim=8, n_q=2, codebook_size=16)


def tiny(**kw) -> VQVAE:
    cfg = {**TINY, **kw}
    if cfg.get("channels", 1) > 1:
        cfg.setdefault("kind", "series")
        cfg.setdefault("sample_rate", None)
    return VQVAE(VQVAEConfig(**cfg)).eval()


@pytest.mark.parametrize("channels", [1, 2, 7])
@pytest.mark.parametrize("length", [1, 7, 33, 101])
def test_shapes_any_channels_and_length(channels, length):
    model = tiny(channels=channels, strides=[2, 4])
    x = torch.randn(3, channels, length)
    codes = model.encode(x)
    frames = -(-length // 8)
    assert codes.shape == (3, 2, frames) and codes.dtype == torch.int64
    assert model.encode(x, n_q=1).shape == (3, 1, frames)
    assert model.decode(codes, length=length).shape == (3, channels, length)
    assert model.decode(codes[:, :1]).shape == (3, channels, frames * 8)
    out = model.train()(x)
    assert out.recon.shape == x.shape and out.codes.shape == (3, 2, frames) and out.loss.isfinite()


def test_geometry_and_bitrate():
    model = VQVAE(VQVAEConfig(strides=[2, 4, 4], n_q=4, codebook_size=256, hidden=8, max_hidden=16, dim=8))
    assert model.hop == 32 and model.frame_rate == 250.0 and model.bitrate() == 8000.0 and model.bitrate(1) == 2000.0
    paper = VQVAE(VQVAEConfig(strides=[2] * 6, hidden=4, max_hidden=8, dim=4, n_q=1, codebook_size=8))
    assert paper.hop == 64 and paper.encode(torch.randn(1, 1, 640)).shape == (1, 1, 10)
    series = tiny(channels=3, strides=[2, 2])
    assert series.frame_rate == 0.25  # per time step without a sample rate


def _encoder_latent(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    return model.encoder(model._pad(x))


@pytest.mark.parametrize("strides", [[2, 4], [3, 5], [2, 2, 2]])
def test_encoder_receptive_field_is_exact(strides):
    torch.manual_seed(1)
    model = tiny(strides=strides).double()
    hop = model.hop
    left, right = model.encoder_context
    assert model.encoder_receptive_field == left + right + 1 > hop
    frames = 2 * -(-(left + right) // hop) + 6
    f = frames // 2
    x = torch.randn(1, 1, frames * hop, dtype=torch.double)
    z0, c0 = _encoder_latent(model, x)[..., f], model.encode(x)[..., f]
    for pos, inside in [(f * hop - left - 1, False), (f * hop - left, True), (f * hop + right, True), (f * hop + right + 1, False)]:
        y = x.clone()
        y[..., pos] += 50.0
        changed = not torch.equal(_encoder_latent(model, y)[..., f], z0)
        assert changed == inside, (pos, inside)
        codes_changed = not torch.equal(model.encode(y)[..., f], c0)
        if not inside:
            assert not codes_changed
    # a large perturbation inside the field moves the latent enough to change the code
    y = x.clone()
    y[..., f * hop] += 1e3
    assert not torch.equal(model.encode(y)[..., f], c0)


@pytest.mark.parametrize("strides", [[2, 4], [3, 5]])
def test_decoder_receptive_field_is_exact(strides):
    torch.manual_seed(2)
    model = tiny(strides=strides).double()
    hop, (left, right) = model.hop, model.decoder_context
    assert model.decoder_receptive_field == left + right + 1
    frames = 2 * (left + right) + 8
    f = frames // 2
    codes = torch.randint(0, 16, (1, 2, frames))
    y0 = model.decode(codes)[..., f * hop : (f + 1) * hop]
    for g, inside in [(f - left - 1, False), (f - left, True), (f + right, True), (f + right + 1, False)]:
        c = codes.clone()
        c[:, :, g] = (c[:, :, g] + 1) % 16
        changed = not torch.equal(model.decode(c)[..., f * hop : (f + 1) * hop], y0)
        assert changed == inside, (g, inside)


def test_encoder_decoder_modules_direct():
    enc, dec = Encoder(2, 4, [2, 3], hidden=4, act="snake"), Decoder(2, 4, [2, 3], hidden=4, act="snake", norm=False)
    z = enc(torch.randn(2, 2, 36))
    assert z.shape == (2, 4, 6) and dec(z).shape == (2, 2, 36)
    with pytest.raises(ValueError):
        enc(torch.randn(2, 2, 35))


@pytest.mark.parametrize("kind", ["audio", "series"])
def test_chunked_encoding_equals_whole(kind):
    torch.manual_seed(3)
    model = tiny(strides=[2, 4]) if kind == "audio" else tiny(channels=3, strides=[2, 4])
    x = torch.randn(2, model.config.channels, 3001) * 3 + 1
    whole, stats = model.encode(x, return_stats=True)
    for chunk in (7, 40, 1000):
        assert torch.equal(model.encode_chunked(x, chunk_frames=chunk, stats=stats), whole)
    assert torch.equal(model.encode_chunked(x, chunk_frames=13), whole)  # stats computed on all of x


def test_series_stats_round_trip():
    model = tiny(channels=2, strides=[2, 2])
    x = torch.stack([torch.linspace(0, 1, 50) * 100 + 1000, torch.randn(50) * 0.01 - 5])[None]
    xn, stats = model.normalize(x)
    assert stats.mean.shape == (1, 2, 1) and torch.allclose(xn.mean(-1), torch.zeros(1, 2), atol=1e-4)
    assert torch.allclose(model.denormalize(xn, stats), x, rtol=1e-5, atol=1e-3)
    codes, st = model.encode(x, return_stats=True)
    assert torch.equal(st.mean, stats.mean)
    raw = model.decode(codes, length=50)
    assert torch.allclose(model.decode(codes, length=50, stats=st), raw * st.std + st.mean)
    assert model.encode(x, return_stats=True, stats=stats)[1] is stats
    audio = tiny()
    assert audio.encode(torch.randn(1, 1, 9), return_stats=True)[1] is None


def test_gradients_reach_encoder_and_decoder():
    model = tiny(strides=[2, 2]).train()
    out = model(torch.randn(2, 1, 64) * 0.3)
    out.loss.backward()
    for part in (model.encoder, model.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert set(out.losses) >= {"l1", "spectral", "mel", "logmag", "vq"} and out.stats["usage"].shape == (2,)


def test_config_json_round_trip_and_validation(tmp_path):
    cfg = VQVAEConfig(kind="series", sample_rate=None, channels=7, strides=[2, 4, 4], activation="snake")
    again = VQVAEConfig.from_json(cfg.to_json())
    assert again == cfg and json.loads(cfg.to_json())["strides"] == [2, 4, 4]
    audio = VQVAEConfig()
    assert audio.fft_sizes == [128, 256, 512, 1024] and VQVAEConfig.from_dict(audio.to_dict()) == audio
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert VQVAEConfig.load(tmp_path / "c.json") == cfg
    bad = [
        {"kind": "video"}, {"strides": []}, {"strides": [2, 0]}, {"n_q": 0}, {"codebook_size": 1.5},
        {"channels": 2}, {"sample_rate": None}, {"activation": "relu"}, {"decay": 1.0}, {"weight_norm": "yes"},
        {"nonsense": 1}, {"strides": "2,4"}, {"fft_sizes": [256, 256], "n_mels": [8, 8]}, {"beta": float("nan")},
        {"encoder_hidden": 0}, {"encoder_max_hidden": 2.5}, {"encoder_dilations": [1, 0]}, {"encoder_dilations": 3},
    ]
    for d in bad:
        with pytest.raises(ConfigError):
            VQVAEConfig.from_dict(d)
    with pytest.raises(ConfigError):
        VQVAEConfig.from_json("{not json")
    (tmp_path / "bad.json").write_text('{"n_q": -1}')
    with pytest.raises(ConfigError, match="bad.json"):
        VQVAEConfig.load(tmp_path / "bad.json")


def test_light_encoder_only_changes_the_encoder():
    """encoder_* fields size the encoder alone; the decoder, hop and codes layout stay those of the config."""
    torch.manual_seed(4)
    cfg = dict(strides=[2, 4], hidden=8, max_hidden=32)
    light = tiny(**cfg, encoder_hidden=4, encoder_max_hidden=8, encoder_dilations=[1])
    full = tiny(**cfg)
    enc = [m for m in light.encoder.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in enc if c.stride[0] > 1] == [8, 8]  # 4 -> 8 -> capped at 8
    assert len(enc) == len([m for m in full.encoder.modules() if isinstance(m, torch.nn.Conv1d)]) - 2 * 2 * 2
    assert str(light.decoder) == str(full.decoder) and light.hop == full.hop == 8
    assert light.encoder_receptive_field < full.encoder_receptive_field
    x = torch.randn(2, 1, 800)
    codes = light.encode(x)
    assert codes.shape == full.encode(x).shape and light.decode(codes).shape == x.shape
    again = VQVAEConfig.from_json(light.config.to_json())
    assert again == light.config and again.encoder_dilations == [1]
    assert VQVAEConfig.from_dict({k: v for k, v in light.config.to_dict().items() if not k.startswith("encoder_")}) == full.config
    assert not any(k.startswith("encoder_") or k == "logmag_weight" for k in full.config.to_dict())  # older readers


def test_logmag_weight_scales_the_log_stft_term():
    torch.manual_seed(5)
    x = torch.randn(2, 1, 512) * 0.1
    losses = {}
    for w in (0.0, 1.0, 2.5):
        torch.manual_seed(6)
        out = tiny(strides=[2, 4], logmag_weight=w).train()(x)
        losses[w] = {k: float(v) for k, v in out.losses.items()}
        assert losses[w]["spectral"] == pytest.approx(losses[w]["mel"] + w * losses[w]["logmag"], rel=1e-5)
    assert losses[0.0]["logmag"] == pytest.approx(losses[2.5]["logmag"]) and losses[0.0]["logmag"] > 0  # same model, signal
    assert VQVAEConfig.from_dict(tiny(logmag_weight=0.0).config.to_dict()).logmag_weight == 0.0
