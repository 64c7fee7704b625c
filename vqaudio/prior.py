"""The token prior as a library: token extraction (cached), datasets, the training task, training and sampling.

::

    corpus = extract_tokens(codec, "data/", cache_dir="exp/tokens")     # cached by codec sha256 + file sha256
    result = train_prior(codec, "data/", "exp/", WaveNetConfig(layers=20), TrainConfig(steps=20000))  # train.fit
    paths = sample("exp/", codec, n=4, seconds=2.0, top_p=0.9, seed=0, out_dir="out/")

Held-out NLL is reported in bits per token next to the unigram entropy (bits) of the training codes: a prior
that learned nothing about the order of tokens scores about the unigram entropy.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vqaudio import tokenfile
from vqaudio.errors import ConfigError, TokenFileError
from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.tokenfile import Codes

__all__ = [
    "TokenCorpus", "TokenWindows", "PriorTask", "markov_tokens", "unigram_bits",
    "extract_tokens", "codec_meta", "split_corpus", "train_prior", "load_prior", "sample", "LN2",
]

LN2 = math.log(2.0)


# ---- data -----------------------------------------------------------------------------------------------------
@dataclass
class TokenCorpus:
    """Token sequences of a corpus: ``seqs[i]`` int64 ``[n_q, F_i]`` (one per file channel), a label id each."""

    seqs: list[Tensor]
    labels: list[int]
    sources: list[str]
    label_names: list[str] = field(default_factory=list)
    codec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def tokens(self) -> int:
        return sum(s.numel() for s in self.seqs)

    def subset(self, idx: Iterable[int]) -> TokenCorpus:
        idx = list(idx)
        return TokenCorpus([self.seqs[i] for i in idx], [self.labels[i] for i in idx], [self.sources[i] for i in idx],
                           self.label_names, self.codec)


class TokenWindows(Dataset):
    """Windows of ``seq_len`` frames cut every ``stride`` frames from each sequence of a :class:`TokenCorpus`.

    Item: ``{"codes": int64[n_q, seq_len], "mask": bool[seq_len], "label": int64[]}``; sequences (or tails)
    shorter than a window are zero-padded and masked out of the loss.

    With ``random_crop``, :meth:`sample` (what ``vqaudio.train.fit`` calls with the epoch) shifts window ``k``
    by a random offset in ``[0, stride)``, a pure function of ``(seed, k, epoch)``: every crop is seen over the
    epochs and resuming stays exact.
    """

    def __init__(self, corpus: TokenCorpus, seq_len: int, stride: int | None = None, random_crop: bool = False,
                 seed: int = 0) -> None:
        if seq_len < 1:
            raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
        self.corpus, self.seq_len, self.stride = corpus, seq_len, stride or seq_len
        self.random_crop, self.seed = random_crop, seed
        self.index = [(i, s) for i, seq in enumerate(corpus.seqs)
                      for s in range(0, max(1, seq.shape[1] - seq_len + self.stride), self.stride)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        return self._window(*self.index[k])

    def sample(self, k: int, epoch: int) -> dict[str, Tensor]:
        i, s = self.index[k]
        if self.random_crop:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + k)
            room = max(0, self.corpus.seqs[i].shape[1] - self.seq_len - s)
            s += int(torch.randint(0, min(self.stride, room + 1), (1,), generator=g))
        return self._window(i, s)

    def _window(self, i: int, s: int) -> dict[str, Tensor]:
        win = self.corpus.seqs[i][:, s : s + self.seq_len]
        n = win.shape[1]
        codes = F.pad(win, (0, self.seq_len - n))
        mask = torch.arange(self.seq_len) < n
        return {"codes": codes, "mask": mask, "label": torch.tensor(self.corpus.labels[i], dtype=torch.long)}


def markov_tokens(n_seq: int, frames: int, codebook_size: int, n_q: int = 1, branching: int = 3,
                  seed: int = 0, n_labels: int = 0) -> tuple[Tensor, Tensor]:
    """Synthetic token sequences with real structure: ``(codes int64[n_seq, n_q, frames], labels int64[n_seq])``.

    Stage 0 is a first-order Markov chain in which each token has ``branching`` successors (per label, when
    ``n_labels > 0``, so the label matters); stage q is a fixed permutation of stage q-1 of the same frame plus
    a fair coin. Conditional entropy <= log2(branching) bits (stage 0) and 1 bit (stages > 0), unigram ~ log2 K.
    """
    g = torch.Generator().manual_seed(seed)
    K, L = codebook_size, max(1, n_labels)
    succ = torch.stack([torch.stack([torch.randperm(K, generator=g)[:branching] for _ in range(K)]) for _ in range(L)])
    weights = -torch.log(torch.rand(L, K, branching, generator=g))  # Dirichlet(1) by normalised exponentials
    weights = weights / weights.sum(-1, keepdim=True)
    perms = torch.stack([torch.randperm(K, generator=g) for _ in range(n_q)])
    labels = torch.randint(0, L, (n_seq,), generator=g)
    codes = torch.empty(n_seq, n_q, frames, dtype=torch.long)
    z = torch.randint(0, K, (n_seq,), generator=g)
    rows = torch.arange(n_seq)
    for t in range(frames):
        if t:
            pick = torch.multinomial(weights[labels, z], 1, generator=g)[:, 0]
            z = succ[labels, z, pick]
        codes[:, 0, t] = z
        for q in range(1, n_q):
            coin = torch.randint(0, 2, (n_seq,), generator=g)
            codes[:, q, t] = (perms[q][codes[rows, q - 1, t]] + coin) % K
    return codes, labels if n_labels else torch.zeros(n_seq, dtype=torch.long)


def unigram_bits(seqs: Iterable[Tensor], codebook_size: int) -> float:
    """Entropy (bits) of the per-stage unigram distribution of the tokens, averaged over stages.

    seqs: int64 ``[n_q, F_i]`` each.
    """
    counts: Tensor | None = None
    for s in seqs:
        c = torch.stack([torch.bincount(row, minlength=codebook_size) for row in s]).double()
        counts = c if counts is None else counts + c
    if counts is None:
        raise ConfigError("no tokens to compute a unigram entropy from")
    p = counts / counts.sum(1, keepdim=True)
    return float(-(p * torch.log2(p.clamp_min(1e-300))).sum(1).mean())


def split_corpus(corpus: TokenCorpus, valid_fraction: float = 0.1) -> tuple[TokenCorpus, TokenCorpus]:
    """(train, valid): every ``round(1/valid_fraction)``-th *source file* (sorted) goes to validation."""
    files = sorted(set(corpus.sources))
    if len(files) < 2:
        raise ConfigError(f"need at least 2 files for a held-out split, got {len(files)}")
    every = max(2, round(1 / valid_fraction)) if valid_fraction > 0 else len(files) + 1
    held = {f for j, f in enumerate(files) if j % every == every - 1} or {files[-1]}
    valid = [i for i, s in enumerate(corpus.sources) if s in held]
    train = [i for i, s in enumerate(corpus.sources) if s not in held]
    return corpus.subset(train), corpus.subset(valid)


# ---- the task train.py runs ---------------------------------------------------------------------------------
def _masked_nll(model: torch.nn.Module, cfg: WaveNetConfig, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(sum of token NLLs in nats, number of tokens) over the unmasked frames of a batch.

    ``model``: the prior or its DDP wrapper (called, so DDP synchronises gradients).
    """
    codes, mask = batch["codes"], batch["mask"]
    logits = model(codes, batch["label"] if cfg.n_labels else None)  # [B, Q, L, K]
    nll = F.cross_entropy(logits.flatten(0, 2), codes.flatten(), reduction="none").view_as(codes)
    m = mask[:, None, :].expand_as(codes)
    return (nll * m).sum(), m.sum()


class PriorTask:
    """Teacher-forced cross-entropy of a :class:`WaveNetPrior` on :class:`TokenWindows` batches (for ``fit``)."""

    def __init__(self, model: WaveNetPrior, unigram: float | None = None, info: dict | None = None) -> None:
        self.model = model
        self.unigram = unigram  # unigram entropy of the training codes, bits
        self.info = info or {}

    def _to(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        dev = self.model.embed.weight.device
        return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}

    def training_step(self, batch: dict[str, Tensor], model: torch.nn.Module | None = None) -> tuple[Tensor, dict]:
        """Mean NLL (nats per token) of the batch, and ``{"nll_bits": ...}``."""
        total, n = _masked_nll(model or self.model, self.model.cfg, self._to(batch))
        loss = total / n.clamp_min(1)
        return loss, {"nll_bits": float(loss.detach()) / LN2}

    @torch.no_grad()
    def validate(self, batches: Iterable[dict[str, Tensor]], exp_dir: Path | None = None, step: int = 0) -> dict:
        """Held-out NLL in bits per token (``nll_bits``, the value to minimise), next to the unigram entropy."""
        model = self.model
        was = model.training
        model.eval()
        total, n = 0.0, 0
        for batch in batches:
            s, c = _masked_nll(model, model.cfg, self._to(batch))
            total, n = total + float(s), n + int(c)
        model.train(was)
        out = {"nll_bits": total / max(n, 1) / LN2, "tokens": n}
        if self.unigram is not None:
            out["unigram_bits"] = self.unigram
        return out

    def config_dict(self) -> dict:
        return {"task": "prior", "model": self.model.config_dict(), "unigram_bits": self.unigram, **self.info}


# ---- tokens of a corpus, through a codec, cached -----------------------------------------------------------
def codec_meta(codec) -> dict:
    """What a prior remembers of its codec (to check it at sampling time and to write ``.vqa`` files)."""
    return {"name": codec.name, "sha256": codec.sha256, "kind": codec.kind, "sample_rate": codec.sample_rate,
            "hop": codec.hop, "channels": codec.channels, "codebook_size": codec.codebook_size, "n_q": codec.n_q}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inputs(data: Path, kind: str) -> tuple[list[Path], list[str]]:
    """``(files, names)``: audio (or series) and ``.vqa`` files of ``data`` (a folder, searched recursively, a
    manifest or one file; see :func:`vqaudio.data.input_files`) and their names relative to it."""
    from vqaudio.data import input_files, relative_names
    from vqaudio.io import is_audio_path, is_series_path

    ok = is_audio_path if kind == "audio" else is_series_path
    files, root = input_files(data, lambda p: ok(p) or p.suffix.lower() == tokenfile.SUFFIX,
                              "an audio or .vqa" if kind == "audio" else "a series or .vqa")
    if not files:
        raise ConfigError(f"no {kind} or .vqa files found", str(data))
    return files, relative_names(files, root)


def extract_tokens(codec, data: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                   n_q: int | None = None, labels: bool = False, progress: bool = False) -> TokenCorpus:
    """Token sequences of every audio/series file of ``data`` (``.vqa`` files are read as they are).

    ``data`` is a folder (recursive), a manifest (``.txt``/``.lst``/``.list``/``.scp``, a path per line) or a file.

    Encoded files are cached in ``cache_dir/<codec sha256[:16]>/n<n_q>/<file sha256[:32]>.vqa`` and reused
    on the next run (a stale or corrupt cache entry is re-encoded). ``labels``: the label of a file is its
    first-level sub-folder under ``data`` (for a manifest: under its folder, or under its files' common
    folder when it lists files elsewhere; sorted names -> ids). Each channel of a file is one sequence
    ``int64[n_q, F]``.
    """
    data = Path(data)
    n_q = codec.n_q if n_q is None else n_q
    if not 1 <= n_q <= codec.n_q:
        raise ConfigError(f"n_q must be in [1, {codec.n_q}] for codec {codec.name!r}, got {n_q}")
    files, rel = _inputs(data, codec.kind)
    parts = [Path(r).parts for r in rel]
    cache = Path(cache_dir) / codec.sha256[:16] / f"n{n_q}" if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    names = sorted({q[0] for q in parts if len(q) > 1}) if labels else []
    if labels and len(names) < 2:
        raise ConfigError("labels need at least two sub-folders (one per label) with files", str(data))
    corpus = TokenCorpus([], [], [], names, codec_meta(codec))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="tokens", unit="file", leave=False)
    for path, part in zip(files, parts, strict=True):
        codes = _codes_of(codec, path, cache, n_q)
        if labels:
            if len(part) < 2:
                raise ConfigError("with labels, every file must be inside a label sub-folder", str(path))
            label = names.index(part[0])
        else:
            label = 0
        for item in codes.codes[:, :n_q]:
            corpus.seqs.append(item.clone())
            corpus.labels.append(label)
            corpus.sources.append(str(path))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return corpus


def _check_full_steps(codes: Codes, path: Path) -> None:
    """A prior models tokens at the model's own time step: series coded at a coarser one are refused."""
    if codes.decimate != 1:
        raise TokenFileError(f"coded at every {codes.decimate} steps (encode --bits-per-sample); a prior models tokens "
                             "at every step: encode with --n-q", str(path))


def _codes_of(codec, path: Path, cache: Path | None, n_q: int) -> Codes:
    if path.suffix.lower() == tokenfile.SUFFIX:
        codes = tokenfile.read(path)
        codec.check(codes)
        if codes.n_q < n_q:
            raise TokenFileError(f"has {codes.n_q} quantiser levels, the prior needs {n_q}", str(path))
        _check_full_steps(codes, path)
        return codes
    entry = cache / f"{_file_sha256(path)[:32]}{tokenfile.SUFFIX}" if cache is not None else None
    if entry is not None and entry.is_file():
        try:
            codes = tokenfile.read(entry)
            if codes.model_sha256 == codec.sha256 and codes.n_q == n_q:
                return codes
        except TokenFileError:
            pass  # corrupt cache entry: encode again
    codes = codec.encode_file(path, n_q)
    if entry is not None:
        tokenfile.write(entry, codes)
    return codes


# ---- sampling -------------------------------------------------------------------------------------------------
def load_prior(path: str | os.PathLike) -> WaveNetPrior:
    """The prior of a checkpoint folder or of a training experiment folder (best, else last), in eval mode."""
    from vqaudio import registry
    from vqaudio.checkpoint import load_model
    from vqaudio.errors import CheckpointError

    if not Path(path).exists():
        raise CheckpointError("no such prior checkpoint or experiment folder", str(path))
    _, folder = registry.resolve(str(path))
    model = load_model(folder)
    if not isinstance(model, WaveNetPrior):
        raise CheckpointError(f"is a {type(model).__name__} checkpoint, not a WaveNet prior", str(folder))
    return model


def _label_id(model: WaveNetPrior, label: int | str | None) -> int | None:
    cfg = model.cfg
    if label is None:
        if cfg.n_labels:
            names = f" ({', '.join(cfg.label_names)})" if cfg.label_names else ""
            raise ConfigError(f"this prior is conditioned on a label: pass --label in [0, {cfg.n_labels}){names}")
        return None
    if not cfg.n_labels:
        raise ConfigError("this prior has no labels; drop --label")
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if label not in cfg.label_names:
            raise ConfigError(f"unknown label {label!r} (known: {', '.join(cfg.label_names) or 'ids only'})")
        return cfg.label_names.index(label)
    i = int(label)
    if not 0 <= i < cfg.n_labels:
        raise ConfigError(f"label {i} out of range [0, {cfg.n_labels})")
    return i


def _prime_codes(model: WaveNetPrior, codec, prime: str | os.PathLike) -> Codes:
    """Codes of a prime file (``.vqa``, or audio/series encoded with the codec), checked against the prior."""
    path = Path(prime)
    if not path.is_file():
        raise ConfigError("prime file does not exist", str(path))
    meta = model.cfg.codec
    if path.suffix.lower() == tokenfile.SUFFIX:
        codes = tokenfile.read(path)
        if meta and codes.model_sha256 != meta.get("sha256"):
            raise TokenFileError(f"was encoded with codec {codes.model!r}, the prior models codec "
                                 f"{meta.get('name')!r} (sha256 {str(meta.get('sha256'))[:12]}…)", str(path))
        _check_full_steps(codes, path)
    else:
        if codec is None:
            raise ConfigError("priming from audio needs --codec (or pass a .vqa token file)", str(path))
        codes = codec.encode_file(path, model.cfg.n_q)
    if codes.n_q < model.cfg.n_q:
        raise TokenFileError(f"has {codes.n_q} quantiser levels, the prior needs {model.cfg.n_q}", str(path))
    if codes.codebook_size != model.cfg.codebook_size:
        raise TokenFileError(f"codebook size {codes.codebook_size} != the prior's {model.cfg.codebook_size}", str(path))
    return codes


MAX_SAMPLE_SECONDS = 24 * 3600  # longest audio `sample` generates (a frame-by-frame loop: far beyond any sane use)
MAX_SAMPLE_STEPS = 24 * 3600 * 1000  # the same bound for series, counted in time steps (24 h at 1 kHz)


def sample(prior: str | os.PathLike | WaveNetPrior, codec=None, n: int = 1, seconds: float | None = None,
           frames: int | None = None, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, prime: str | os.PathLike | None = None, label: int | str | None = None,
           out_dir: str | os.PathLike = ".", prefix: str = "sample", force: bool = False) -> list[Path]:
    """Sample ``n`` sequences and write ``<prefix>_<i>.vqa`` (+ decoded ``.wav`` / ``.npy`` with a codec).

    Length: ``frames`` new frames, or ``seconds`` of audio (``ceil(seconds * sample_rate / hop)`` frames; for
    series, ``seconds`` counts time steps). With ``prime``, the output starts with the prime's tokens (its first
    channel). ``codec``: a :class:`vqaudio.codec.Codec` or name/path; it must be the prior's codec.
    Existing outputs are an error (checked before sampling) unless ``force``. Returns the written paths.
    """
    from vqaudio.codec import Codec, load_codec
    from vqaudio.report import make_output_dir
    from vqaudio.sampling import generate, make_generator

    model = prior if isinstance(prior, WaveNetPrior) else load_prior(prior)
    meta = dict(model.cfg.codec)
    if codec is not None and not isinstance(codec, Codec):
        codec = load_codec(codec)
    if codec is not None:
        if meta and meta.get("sha256") != codec.sha256:
            raise ConfigError(f"codec {codec.name!r} (sha256 {codec.sha256[:12]}…) is not the prior's codec "
                              f"{meta.get('name')!r} ({str(meta.get('sha256'))[:12]}…)")
        if codec.codebook_size != model.cfg.codebook_size or codec.n_q < model.cfg.n_q:
            raise ConfigError(f"codec {codec.name!r} (K={codec.codebook_size}, n_q={codec.n_q}) cannot decode this "
                              f"prior's tokens (K={model.cfg.codebook_size}, n_q={model.cfg.n_q})")
        meta = codec_meta(codec)
    if not meta:
        raise ConfigError("the prior records no codec: pass --codec")
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    if (seconds is None) == (frames is None):
        raise ConfigError("give exactly one of seconds or frames")
    rate = meta["sample_rate"] or 1
    max_seconds = MAX_SAMPLE_SECONDS if meta["sample_rate"] else MAX_SAMPLE_STEPS
    max_frames = math.ceil(max_seconds * rate / meta["hop"])
    if frames is None:
        unit = "s" if meta["sample_rate"] else " time steps"
        if not isinstance(seconds, numbers.Real) or not math.isfinite(seconds) or not 0 < seconds <= max_seconds:
            raise ConfigError(f"--seconds must be a finite number in (0, {max_seconds:g}{unit}], got {seconds}")
        frames = math.ceil(seconds * rate / meta["hop"])
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or not 1 <= frames <= max_frames:
        raise ConfigError(f"--frames must be an integer in [1, {max_frames}], got {frames}")
    frames = int(frames)
    lab = _label_id(model, label)
    pcodes = _prime_codes(model, codec, prime) if prime is not None else None
    ptok = pcodes.codes[0, : model.cfg.n_q] if pcodes is not None else None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("output path exists and is not a folder", str(out))
    series = meta["kind"] == "series"
    names = [out / f"{prefix}_{i:03d}{tokenfile.SUFFIX}" for i in range(n)]
    if codec is not None:
        names = [q for p in names for q in (p, p.with_suffix(".npy" if series else ".wav"))]
    existing = [p for p in names if p.exists() or p.is_symlink()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"output already exists{more}; pass --force to replace, or choose another -o folder",
                          str(existing[0]))
    make_output_dir(out)
    g = make_generator(seed, model.embed.weight.device)
    codes = generate(model, n, frames, temperature, top_k, top_p, g, ptok, lab).cpu()  # [n, n_q, P + frames]
    written: list[Path] = []
    stats = {k: v[: meta["channels"]] for k, v in pcodes.stats.items()} if pcodes is not None and series else (
        {"mean": [0.0] * meta["channels"], "std": [1.0] * meta["channels"]} if series else None)
    for i in range(n):
        c = Codes(codes[i : i + 1], kind=meta["kind"], model=meta["name"], model_sha256=meta["sha256"],
                  sample_rate=meta["sample_rate"], orig_sample_rate=meta["sample_rate"],
                  length=codes.shape[2] * meta["hop"], channels=1 if not series else meta["channels"], hop=meta["hop"],
                  codebook_size=meta["codebook_size"], stats=stats)
        path = out / f"{prefix}_{i:03d}{tokenfile.SUFFIX}"
        tokenfile.write(path, c)
        written.append(path)
        if codec is not None:
            dst = path.with_suffix(".npy" if series else ".wav")
            codec.decode_to_file(c, dst)
            written.append(dst)
    return written


# ---- training -------------------------------------------------------------------------------------------------
def train_prior(codec, data: str | os.PathLike, exp_dir: str | os.PathLike, model_config: WaveNetConfig | None = None,
                config=None, seq_len: int = 256, n_q: int | None = None, labels: bool = False,
                cache_dir: str | os.PathLike | None = None, valid_fraction: float = 0.1, resume: bool = False,
                progress: bool = True) -> dict:
    """Extract (cached) tokens of ``data`` with ``codec`` and train a prior on them with :func:`vqaudio.train.fit`.

    ``codec``: a Codec or a codec name/path. ``model_config``: architecture (its codebook size, ``n_q``,
    labels and codec fields are set from the codec and the data). ``config``: a ``TrainConfig``; its
    ``best_metric`` is the held-out ``nll_bits``. The token cache defaults to ``exp_dir/tokens``.
    Returns fit's result plus ``unigram_bits`` (entropy of the training codes), ``unigram_xent_bits`` (held-out
    cross-entropy of the smoothed training unigram) and ``valid_nll_bits`` (best checkpoint, whole held-out set).
    """
    import dataclasses

    from torch.utils.data import DataLoader

    from vqaudio.checkpoint import MANIFEST, read_manifest
    from vqaudio.codec import Codec, load_codec
    from vqaudio.train import TrainConfig, fit

    codec = codec if isinstance(codec, Codec) else load_codec(codec)
    config = dataclasses.replace(config or TrainConfig(), best_metric="nll_bits")
    exp = Path(exp_dir)
    last = exp / "last"
    base = model_config or WaveNetConfig()
    if resume and (last / MANIFEST).exists():
        base = WaveNetConfig.from_dict(read_manifest(last)["config"])
        if base.codec.get("sha256") != codec.sha256:
            raise ConfigError(f"the run in {exp} was trained on tokens of codec {base.codec.get('name')!r}, "
                              f"not {codec.name!r}")
        n_q, labels = base.n_q, base.n_labels > 0
    corpus = extract_tokens(codec, data, cache_dir if cache_dir is not None else exp / "tokens", n_q, labels, progress)
    train, valid = split_corpus(corpus, valid_fraction)
    K = codec.codebook_size
    cfg = dataclasses.replace(base, codebook_size=K, n_q=int(corpus.seqs[0].shape[0]),
                              n_labels=len(corpus.label_names), label_names=corpus.label_names, codec=corpus.codec)
    if resume and (last / MANIFEST).exists() and cfg != base:
        raise ConfigError(f"--data {data} does not match the run in {exp} (labels or quantiser levels differ)")
    uni = unigram_bits(train.seqs, K)
    info = {"data": str(data), "files": {"train": len(set(train.sources)), "valid": len(set(valid.sources))},
            "tokens": {"train": train.tokens, "valid": valid.tokens}, "seq_len": seq_len}
    torch.manual_seed(config.seed)
    task = PriorTask(WaveNetPrior(cfg), uni, info)
    train_set = TokenWindows(train, seq_len, random_crop=True, seed=config.seed)
    valid_set = TokenWindows(valid, seq_len)
    result = fit(task, train_set, valid_set, config, exp, resume=resume)
    result.update(unigram_bits=uni, unigram_xent_bits=_unigram_xent(train.seqs, valid.seqs, K), **info)
    if (exp / "best" / MANIFEST).exists():  # the best checkpoint on the whole held-out set
        best = load_prior(exp / "best").to(task.model.embed.weight.device)
        loader = DataLoader(valid_set, batch_size=config.batch_size)
        result["valid_nll_bits"] = PriorTask(best, uni).validate(loader)["nll_bits"]
    return result


def _unigram_xent(train: list[Tensor], valid: list[Tensor], K: int) -> float:
    """Bits per token of held-out codes under the per-stage training unigram (add-1/2 smoothing)."""
    counts = sum(torch.stack([torch.bincount(r, minlength=K) for r in s]).double() for s in train) + 0.5
    logp = torch.log2(counts / counts.sum(1, keepdim=True))
    total = sum(float(logp.gather(1, s).sum()) for s in valid)
    return -total / max(1, sum(s.numel() for s in valid))
