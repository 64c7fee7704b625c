"""Warm starts that grow the decoder: added frame-rate residual units start at identity (the grown model decodes
exactly as its source), and ``train --init`` accepts that growth and nothing else."""

from __future__ import annotations

import pytest
import torch

from vqaudio.checkpoint import load_model, save_model
from vqaudio.errors import ConfigError
from vqaudio.models import VQVAE, VQVAEConfig
from vqaudio.models.grow import can_grow, grow_into
from vqaudio.train import TrainConfig, train_vqvae

TINY = dict(hidden=8, max_hidden=16, dim=8, n_q=2, codebook_size=16, strides=[2, 4])


def _model(seed: int, **kw) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("have,want,own", [(None, [1, 3], {}), ([1], [1, 3, 9], {}),
                                           (None, [1, 3], dict(decoder_frame_kernel=3, decoder_frame_compress=4))])
def test_grown_model_decodes_as_its_source(have, want, own):
    source, target = _model(0, decoder_frame_dilations=have), _model(1, decoder_frame_dilations=want, **own)
    grow_into(target, source)
    x = torch.randn(2, 1, 8 * 40)
    with torch.no_grad():
        z = torch.randn(2, 8, 40)
        torch.testing.assert_close(target.decoder(z), source.decoder(z), atol=1e-6, rtol=0)
        torch.testing.assert_close(target(x).recon, source(x).recon, atol=1e-6, rtol=0)
    assert len(target.decoder.layers) == len(source.decoder.layers) + len(want) - len(have or [])
    # more history, no more lookahead (the streaming latency stays)
    left, right = target.decoder.context
    k = own.get("decoder_frame_kernel", 7)
    assert right == source.decoder.context[1] and left == source.decoder.context[0] + (k - 1) * (sum(want) - sum(have or []))
    if own:  # the units' own kernel and bottleneck (16 channels at the frame rate, 4 inside)
        assert target.decoder.layers[1].block[1].conv.weight.shape == (16 // own["decoder_frame_compress"], 16, k)
    # the new units are live parameters, not frozen: one step of training moves them
    target.train()
    target(x).loss.backward()
    new = target.decoder.layers[1 + len(have or [])].block[-1].conv
    assert new.parametrizations.weight.original0.grad.abs().sum() > 0


def test_only_added_frame_units_are_growth():
    base = VQVAEConfig(**TINY)
    assert can_grow(base, VQVAEConfig(**TINY, decoder_frame_dilations=[1]))
    assert can_grow(VQVAEConfig(**TINY, decoder_frame_dilations=[1]), VQVAEConfig(**TINY, decoder_frame_dilations=[1, 3]))
    assert not can_grow(base, base)
    assert not can_grow(VQVAEConfig(**TINY, decoder_frame_dilations=[3]), VQVAEConfig(**TINY, decoder_frame_dilations=[1, 3]))
    assert not can_grow(base, VQVAEConfig(**{**TINY, "dim": 4}, decoder_frame_dilations=[1]))
    light = dict(decoder_frame_kernel=3, decoder_frame_compress=4)
    assert can_grow(base, VQVAEConfig(**TINY, decoder_frame_dilations=[1], **light))  # new units: any kernel, bottleneck
    assert can_grow(VQVAEConfig(**TINY, decoder_frame_dilations=[1], **light),
                    VQVAEConfig(**TINY, decoder_frame_dilations=[1, 3], **light))
    assert not can_grow(VQVAEConfig(**TINY, decoder_frame_dilations=[1]),  # existing units keep theirs
                        VQVAEConfig(**TINY, decoder_frame_dilations=[1, 3], **light))
    with pytest.raises(ConfigError, match="decoder_frame_compress must be"):
        VQVAEConfig(**TINY, decoder_frame_compress=0)
    assert "decoder_frame_kernel" not in base.to_dict() and "decoder_frame_compress" not in base.to_dict()
    with pytest.raises(ValueError, match="not the source"):
        grow_into(_model(0), _model(1, dim=4))
    with pytest.raises(ConfigError, match="decoder_frame_dilations must be"):
        VQVAEConfig(**TINY, decoder_frame_dilations=[0])
    assert "decoder_frame_dilations" not in base.to_dict()  # older readers see the config they know


def test_train_init_grows_the_decoder(tmp_path, speech_dir):
    source = _model(7)
    save_model(tmp_path / "src", source)
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-12, valid_every=1, valid_batches=1, checkpoint_every=1, progress=False)
    train_vqvae(str(speech_dir), tmp_path / "grown", VQVAEConfig(**TINY, decoder_frame_dilations=[1, 3]), cfg,
                segment=512, plots=False, init=tmp_path / "src")
    grown = load_model(tmp_path / "grown" / "last").eval()
    assert grown.config.decoder_frame_dilations == [1, 3]
    z = torch.randn(1, 8, 20)
    with torch.no_grad():
        torch.testing.assert_close(grown.decoder(z), source.decoder(z), atol=1e-4, rtol=0)  # lr 1e-12: still the source
