"""vqaudio: discrete tokens for audio and time series (VQ-VAE), and a WaveNet prior over them."""

from vqaudio.errors import VQAudioError
from vqaudio.ops import nearest_code, quantize

__version__ = "0.1.0"
__all__ = ["VQAudioError", "nearest_code", "quantize", "__version__"]
