"""vqaudio: discrete tokens for audio and time series (VQ-VAE), and a WaveNet prior over them.

    codec = vqaudio.load_codec("speech-8k")             # or a folder: "exp/speech/best"
    codes = codec.encode(wav, sample_rate)              # wav: Tensor[C, T] -> Codes
    vqaudio.save_codes("talk.vqa", codes)
    wav, sr = codec.decode(vqaudio.load_codes("talk.vqa"))

The names below are imported on first use, so ``vqaudio --version`` and ``--help`` start without torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_model": "vqaudio.checkpoint", "save_model": "vqaudio.checkpoint",
    "Codec": "vqaudio.codec", "Codes": "vqaudio.codec", "load_codec": "vqaudio.codec", "load_codec_for": "vqaudio.codec",
    "load_codes": "vqaudio.codec", "save_codes": "vqaudio.codec",
    "AudioError": "vqaudio.errors", "CheckpointError": "vqaudio.errors", "ConfigError": "vqaudio.errors",
    "TokenFileError": "vqaudio.errors", "VQAudioError": "vqaudio.errors",
    "load_audio": "vqaudio.io", "save_audio": "vqaudio.io",
    "VQVAE": "vqaudio.models.vqvae", "VQVAEConfig": "vqaudio.models.vqvae",
    "WaveNetConfig": "vqaudio.models.wavenet", "WaveNetPrior": "vqaudio.models.wavenet",
    "nearest_code": "vqaudio.ops", "quantize": "vqaudio.ops",
    "load_prior": "vqaudio.prior", "sample": "vqaudio.prior", "train_prior": "vqaudio.prior",
    "ResidualVQ": "vqaudio.quantize", "VectorQuantizer": "vqaudio.quantize",
    "TrainConfig": "vqaudio.train", "fit": "vqaudio.train", "train_vqvae": "vqaudio.train",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vqaudio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``vqaudio.quantize`` is the function (``vqaudio.ops.quantize``), as it always was: importing the
    submodule of the same name (``vqaudio/quantize.py``) must not replace the package attribute."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules; `from vqaudio.quantize import X` still works
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
