"""Neural network models: the conv VQ-VAE (``vqvae``, ``conv``) and the WaveNet prior (``wavenet``)."""

from vqaudio.models.conv import Decoder, Encoder
from vqaudio.models.vqvae import VQVAE, SeriesStats, VQVAEConfig, VQVAEOutput

__all__ = ["Encoder", "Decoder", "VQVAE", "VQVAEConfig", "VQVAEOutput", "SeriesStats"]
