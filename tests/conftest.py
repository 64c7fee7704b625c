"""Shared pytest fixtures: real 8 kHz speech from Debian's asterisk-core-sounds packages, tiny crops.

Tests that need speech use ``speech_files`` / ``speech_crops``; they skip with a clear reason when
the packages are absent (CI installs asterisk-core-sounds-{en,es,fr,it}-wav). Voices are read from their own
folders (en_US_f_Allison, ...), never from the <lang> alternatives.

The test process runs torch on one CPU thread (``VQAUDIO_TEST_THREADS`` to change): on small,
shared machines two OpenMP threads contending with other processes made the tiny models of these
tests over ten times slower. Subprocesses started by tests are not affected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # import vqaudio from the working tree without installing it
    sys.path.insert(0, str(ROOT))
torch.set_num_threads(int(os.environ.get("VQAUDIO_TEST_THREADS", "1")))

sys.path.insert(0, str(ROOT / "recipes" / "common"))
from voices import ASTERISK_CORE  # noqa: E402  (the recipes' voice table: one source of truth)

ASTERISK_SOUNDS = Path(os.environ.get("VQAUDIO_SPEECH_DIR", "/usr/share/asterisk/sounds"))

from vqaudio.ops.exact_conv import has_exact_conv  # noqa: E402

# Codes that are the same bits across chunkings, pushes, batches and threads come from the compiled
# vqaudio::exact_conv1d; a build without it runs ATen's convs, which may flip a code at a float near-tie.
exact_codes = pytest.mark.skipif(not has_exact_conv(), reason="bit-equal codes need vqaudio._C with exact_conv1d")
# Each voice from its own folder: the <lang> links may point at another voice package, or be its .gsm folder.
SPEECH_VOICES = tuple(folder for folder, _ in ASTERISK_CORE)
SPEECH_SR = 8000


def find_speech_files(voices: tuple[str, ...] = SPEECH_VOICES, limit: int | None = None) -> list[Path]:
    """Sorted 8 kHz mono speech WAVs under ``ASTERISK_SOUNDS/<voice folder>/``."""
    files: list[Path] = []
    for voice in voices:
        root = ASTERISK_SOUNDS / voice
        if root.is_dir():
            files += sorted(p for p in root.rglob("*.wav") if p.is_file() and p.stat().st_size > 44)
    return files[:limit] if limit else files


@pytest.fixture(scope="session")
def speech_files() -> list[Path]:
    """All asterisk speech WAVs (8 kHz mono); skips the test when none are installed."""
    files = find_speech_files()
    if not files:
        pytest.skip(f"no speech found under {ASTERISK_SOUNDS}/<{','.join(SPEECH_VOICES)}>: "
                    "install asterisk-core-sounds-{en,es,fr,it}-wav (or set VQAUDIO_SPEECH_DIR)")
    return files


@pytest.fixture(scope="session")
def speech_file(speech_files: list[Path]) -> Path:
    """One speech file of at least 1 s."""
    import soundfile as sf

    for p in speech_files:
        if sf.info(str(p)).frames >= SPEECH_SR:
            return p
    pytest.skip("no speech file of at least 1 s")


def speech_crops_from(files: list[Path], n: int, length: int, seed: int = 0) -> torch.Tensor:
    """``n`` crops of ``length`` samples from distinct files, skipping near-silent ones: ``[n, 1, length]``."""
    from vqaudio.io import load_audio

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(files), generator=g).tolist()
    crops = []
    for i in order:
        wav, _ = load_audio(files[i], SPEECH_SR)
        if wav.shape[-1] < length:
            continue
        start = int(torch.randint(0, wav.shape[-1] - length + 1, (1,), generator=g))
        crop = wav[:1, start : start + length]
        if crop.abs().max() > 0.05:
            crops.append(crop)
        if len(crops) == n:
            break
    if len(crops) < n:
        pytest.skip(f"only {len(crops)} speech files long enough for {n} crops of {length}")
    return torch.stack(crops)


@pytest.fixture(scope="session")
def speech_crops(speech_files: list[Path]) -> torch.Tensor:
    """16 crops of 2048 samples (0.256 s at 8 kHz) of real speech: ``[16, 1, 2048]`` float32."""
    return speech_crops_from(speech_files, 16, 2048)


@pytest.fixture
def speech_dir(tmp_path: Path, speech_files: list[Path]) -> Path:
    """A temporary folder with symlinks to 24 speech files (two languages, nested sub-folders)."""
    root = tmp_path / "speech"
    top = {ASTERISK_SOUNDS / v for v in ("en_US_f_Allison", "fr_CA_f_June")}
    picks = [p for p in speech_files if p.parent in top] or speech_files
    step = max(1, len(picks) // 24)
    for i, p in enumerate(picks[::step][:24]):
        d = root / f"part{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:02d}_{p.name}").symlink_to(p)
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same torch seed."""
    torch.manual_seed(0)
