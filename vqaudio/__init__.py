"""vqaudio: discrete tokens for audio and time series (VQ-VAE), and a WaveNet prior over them.

    codec = vqaudio.load_codec("path/to/experiment")   # or a shipped model name
    codes = codec.encode(wav, sample_rate)              # wav: Tensor[C, T] -> Codes
    vqaudio.save_codes("talk.vqa", codes)
    wav, sr = codec.decode(vqaudio.load_codes("talk.vqa"))
"""

from vqaudio.checkpoint import load_model, save_model
from vqaudio.codec import Codec, Codes, load_codec, load_codes, save_codes
from vqaudio.errors import AudioError, CheckpointError, ConfigError, TokenFileError, VQAudioError
from vqaudio.io import load_audio, save_audio
from vqaudio.models.vqvae import VQVAE, VQVAEConfig
from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.ops import nearest_code, quantize
from vqaudio.prior import load_prior, sample, train_prior
from vqaudio.quantize import ResidualVQ, VectorQuantizer
from vqaudio.train import TrainConfig, fit, train_vqvae

__version__ = "0.1.0"
__all__ = [
    "VQVAE", "AudioError", "CheckpointError", "Codec", "Codes", "ConfigError", "ResidualVQ", "TokenFileError",
    "TrainConfig", "VQAudioError", "VQVAEConfig", "VectorQuantizer", "WaveNetConfig", "WaveNetPrior", "__version__",
    "fit", "load_audio", "load_codec", "load_codes", "load_model", "load_prior", "nearest_code", "quantize", "sample",
    "save_audio", "save_codes", "save_model", "train_prior", "train_vqvae",
]
