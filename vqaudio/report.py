"""Codec evaluation: :func:`evaluate` scores a codec at every ``n_q`` next to its baselines, and
:func:`write_report` turns the result into ``report.md``, ``report.json`` and PNG plots.

One code path for ``vqaudio eval`` and ``benchmarks/bench_quality.py``::

    codec = load_codec("exp/vqvae")
    result = evaluate(codec, eval_files("heldout.txt"))   # dict of plain numbers (JSON-ready)
    write_report(result, "exp/eval")

The codec's bitrate is measured, not computed: each file's codes (cut to ``n_q`` levels) go through
``save_codes`` to a ``.vqa`` file, whose payload size (file minus header and checksums) over the file's
duration is the bitrate; the decoded audio is that file read back and decoded at the file's rate.
Metrics are computed at the file's own rate (see :mod:`vqaudio.metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqaudio import baselines as B
from vqaudio import metrics as M
from vqaudio.errors import ConfigError
from vqaudio.figures import metric, rate
from vqaudio.figures import unit as bitrate_unit
from vqaudio.io import atomic_path, is_audio_path, is_series_path, load_audio, load_series, resample

__all__ = ["eval_files", "vqa_bits", "evaluate", "write_report", "BASELINES", "primary_metric"]

BASELINES = ("pca", "codec2-3200", "codec2-2400", "opus-6k")
_PREFIX = struct.Struct("<8sHI")  # .vqa magic, version, header length (docs/format.md)


def eval_files(spec: str | os.PathLike, kind: str = "audio") -> tuple[list[Path], list[str]]:
    """``(paths, names)`` of a folder (recursive), manifest or single file; names are relative to the root."""
    from vqaudio.data import input_files, relative_names

    ok = is_audio_path if kind == "audio" else is_series_path
    files, root = input_files(spec, ok, "an audio" if kind == "audio" else "a series")
    if not files:
        raise ConfigError(f"no {kind} files to evaluate", str(spec))
    return files, relative_names(files, root)


def vqa_bits(path: str | os.PathLike) -> tuple[int, int]:
    """``(payload bits, file bits)`` of a ``.vqa`` file: the packed codes alone, and the whole file."""
    data = Path(path).read_bytes()
    _, _, hlen = _PREFIX.unpack_from(data)
    return (len(data) - _PREFIX.size - hlen - 8) * 8, len(data) * 8


def primary_metric(kind: str) -> str:
    """The metric that ranks files (best/worst): log-mel distance for audio, SI-SNR for series."""
    return "log_mel" if kind == "audio" else "si_snr"


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over files, ignoring ``nan`` (e.g. PESQ on a file without speech)."""
    out = {}
    for k in rows[0] if rows else ():
        vals = [r[k] for r in rows if not math.isnan(r[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


def evaluate(codec, files: list[Path], names: list[str] | None = None, n_qs: list[int] | None = None,
             baselines: tuple[str, ...] = BASELINES, pca_fit: list[Path] | None = None,
             metrics: tuple[str, ...] | None = None, keep: bool = True, progress: bool = False) -> dict[str, Any]:
    """Score ``codec`` on ``files`` at each ``n_q`` in ``n_qs`` (default ``1..codec.n_q``) and the baselines.

    ``baselines``: names from :data:`BASELINES` (PCA runs at every ``n_q``'s bit budget, fitted on
    ``pca_fit`` or else the evaluated files; external codecs whose binaries are missing are skipped, with
    the reason in ``skipped``). ``metrics``: subset of :data:`vqaudio.metrics.AUDIO_METRICS` (default:
    every available one). ``keep``: also return the signals of the best and worst files under ``"_audio"``
    (for plots; not JSON). Returns a dict of plain numbers (see :func:`write_report`).
    """
    from vqaudio.codec import load_codes, save_codes

    names = names or [str(f) for f in files]
    kind = codec.kind
    n_qs = sorted(set(n_qs or range(1, codec.n_q + 1)))
    bad = [k for k in n_qs if not 1 <= k <= codec.n_q]
    if bad:
        raise ConfigError(f"n_q must be an integer in [1, {codec.n_q}] for model {codec.name!r}, got {bad[0]}")
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(sorted(unknown))}; choose from {', '.join(BASELINES)}")
    skipped: dict[str, str] = {}
    avail = B.available_external()
    external = []
    for c in B.EXTERNAL:
        if c.name not in baselines:
            continue
        if kind != "audio":
            skipped[c.name] = "audio codec, not applicable to series"
        elif avail[c.name]:
            skipped[c.name] = avail[c.name]
        else:
            external.append(c)
    for m, why in M.optional_metrics().items():
        if why and kind == "audio":
            skipped[m] = why
    load = (lambda f: load_audio(f)) if kind == "audio" else (lambda f: (load_series(f), None))
    model_rate = codec.sample_rate

    pcas: dict[int, B.PCABaseline] = {}
    if "pca" in baselines:
        fit_files = pca_fit or files
        fit = [_at(load(f), model_rate) for f in fit_files]
        if kind == "audio":  # audio is coded channel by channel, like the codec's mono model
            fit = [ch for x in fit for ch in x.split(1)]
        pcas = dict(zip(n_qs, B.PCABaseline.fit(fit, codec.hop, [float(k * codec.bits_per_code) for k in n_qs],
                                                  normalise=kind == "series"), strict=True))

    systems: dict[str, dict[str, Any]] = {}

    def add(key: str, name: str, row: dict[str, float], bits: float, seconds: float, **info: Any) -> None:
        s = systems.setdefault(key, {"per_file": {}, "bits": 0.0, "seconds": 0.0, **info})
        s["per_file"][name] = {**row, "bitrate": bits / seconds}
        s["bits"] += bits
        s["seconds"] += seconds

    all_codes: list[Tensor] = []
    signals: dict[str, dict[str, Tensor]] = {}
    top = max(n_qs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="eval", unit="file", leave=False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vqaudio-eval-") as tmp:
        for path, name in zip(files, names, strict=True):
            ref, sr = load(path)
            seconds = ref.shape[-1] / (sr or 1)  # series: "seconds" are time steps, bitrates bits per step
            full = codec.encode_file(path, n_q=top)
            all_codes.append(full.codes)
            for k in n_qs:
                vqa = Path(tmp) / f"n{k}.vqa"
                save_codes(vqa, dataclasses.replace(full, codes=full.codes[:, :k].contiguous()))
                payload, total = vqa_bits(vqa)
                est, _ = codec.decode(load_codes(vqa))
                row = M.score(ref, est, sr, kind, metrics)
                add(f"vqaudio n_q={k}", name, row, payload, seconds, system="codec", n_q=k, file_bits=0)
                systems[f"vqaudio n_q={k}"]["file_bits"] += total
                if k == top and keep:
                    signals.setdefault(name, {})["codec"] = est
                if k in pcas:
                    x = _at((ref, sr), model_rate)
                    p = pcas[k]
                    parts = [p(ch) for ch in x.split(1)] if kind == "audio" else [p(x)]
                    y, bits = torch.cat([q[0] for q in parts]), sum(q[1] for q in parts)
                    y = resample(y, model_rate, sr) if sr and model_rate != sr else y
                    add(f"pca n_q={k}", name, M.score(ref, y[..., : ref.shape[-1]], sr, kind, metrics), bits, seconds,
                        system="pca", n_q=k, components=p.n_components, bits_per_coefficient=p.bits)
            for c in external:
                outs = [c(ref[ch], sr) for ch in range(ref.shape[0])]
                est = torch.stack([o[0] for o in outs])
                add(c.name, name, M.score(ref, est, sr, kind, metrics), sum(o[1] for o in outs), seconds,
                    system="external")
            if keep:
                signals.setdefault(name, {}).update(ref=ref, rate=sr)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()

    for s in systems.values():
        s["mean"] = _mean(list(s["per_file"].values()))
        seconds = s.pop("seconds")
        s["bitrate"] = s.pop("bits") / seconds
        if "file_bits" in s:
            s["file_bitrate"] = s.pop("file_bits") / seconds  # the whole .vqa file, header included
    counts = M.code_counts(all_codes, codec.codebook_size)
    main = systems[f"vqaudio n_q={top}"]["per_file"]
    key = primary_metric(kind)
    key = key if key in next(iter(main.values())) else next(iter(next(iter(main.values()))))  # a metric subset
    order = sorted(main, key=lambda n: main[n][key], reverse=M.HIGHER_IS_BETTER[key])  # best first
    result = {
        "codec": {"name": codec.name, "sha256": codec.sha256, "kind": kind, "sample_rate": codec.sample_rate,
                  "hop": codec.hop, "n_q": codec.n_q, "codebook_size": codec.codebook_size,
                  "nominal_bitrate": {str(k): codec.bitrate(k) for k in n_qs}},
        "files": names, "n_qs": n_qs, "primary_metric": key, "best_file": order[0], "worst_file": order[-1],
        "metrics": [m for m in next(iter(main.values())) if m != "bitrate"],
        "systems": systems, "skipped": skipped,
        "codebook": {"n_q": top, "counts": counts.tolist(), **M.codebook_stats(counts)},
        "pca_fit": "evaluated files" if not pca_fit else f"{len(pca_fit)} separate files",
        "seconds": time.perf_counter() - t0,
    }
    if keep:
        result["_audio"] = {n: signals[n] for n in {order[0], order[-1]}}
    return result


def _at(item: tuple[Tensor, int | None], rate: int | None) -> Tensor:
    x, sr = item
    return resample(x, sr, rate) if sr and rate and sr != rate else x


_LABELS = {"si_snr": "SI-SNR dB ↑", "log_mel": "log-mel ↓", "mrstft": "MR-STFT ↓", "pesq_nb": "PESQ-NB ↑",
           "pesq_wb": "PESQ-WB ↑", "stoi": "STOI ↑", "nmse": "NMSE ↓"}


def _finite(x: Any) -> Any:
    """``x`` with every NaN/inf float replaced by ``None`` (standard JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _plot_spectrograms(path: Path, pairs: list[tuple[str, Tensor, Tensor, int]]) -> None:
    """Original vs reconstruction log spectrograms, one row per ``(title, ref [T], est [T], sample_rate)``."""
    from matplotlib.figure import Figure

    from vqaudio.plots import save_figure

    fig = Figure(figsize=(10, 2.6 * len(pairs)))
    for r, (title, x, y, sample_rate) in enumerate(pairs):
        n_fft = 1 << max(6, round(math.log2(0.032 * sample_rate)))
        specs = [torch.stft(s.float(), n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
                 for s in (x, y)]
        specs = [(20 * torch.log10(s.clamp_min(1e-5))).numpy() for s in specs]
        vmax = float(specs[0].max())
        for c, (s, what) in enumerate(zip(specs, ("original", "reconstruction"), strict=True)):
            ax = fig.add_subplot(len(pairs), 2, 2 * r + c + 1)
            ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
                      extent=(0, x.shape[-1] / sample_rate, 0, sample_rate / 2000))
            ax.set_title(f"{title}: {what}", fontsize=8)
            ax.set_xlabel("s", fontsize=8)
            ax.set_ylabel("kHz", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_curve(path: Path, result: dict[str, Any]) -> None:
    """Each metric against bitrate: the codec over ``n_q``, PCA at the same budgets, external codecs as points."""
    from matplotlib.figure import Figure

    from vqaudio.plots import save_figure

    systems, metrics = result["systems"], result["metrics"]
    fig = Figure(figsize=(4 * len(metrics), 3.4))
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for kind, style in (("codec", "o-"), ("pca", "s--")):
            pts = sorted((s["bitrate"], s["mean"][m], s["n_q"]) for s in systems.values() if s["system"] == kind)
            if pts:
                ax.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], style, label="vqaudio" if kind == "codec" else "PCA")
                for b, v, k in pts:
                    ax.annotate(f"{k}", (b / 1000, v), fontsize=7, textcoords="offset points", xytext=(3, 3))
        for name, s in systems.items():
            if s["system"] == "external":
                ax.plot([s["bitrate"] / 1000], [s["mean"][m]], "^", label=name)
        ax.set_xlabel("kbit/s" if result["codec"]["kind"] == "audio" else "kbit/step")
        ax.set_title(_LABELS.get(m, m), fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents); a failure is a one-line :class:`ConfigError` naming the
    folder (or the path component that is a file, not a folder)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            what = "output folder" if blocker == out else f"output folder {out}"
            raise ConfigError(f"is a file, not a folder: cannot create the {what}", str(blocker)) from None
        raise ConfigError(f"cannot create the output folder: {err.strerror or err}", str(out)) from None
    return out


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, plots: bool = True) -> Path:
    """Write ``report.json`` (every number), ``report.md`` and, with ``plots``, ``spectrograms.png`` (best and
    worst file; ``series.png`` for series), ``codebook_usage.png`` and ``rate_curve.png`` into ``out_dir``
    (created; each file written atomically). NaN (e.g. PESQ on a file without speech) is ``null`` in the JSON. Returns the Markdown path."""
    from vqaudio.plots import plot_codebook_usage, plot_series

    out = make_output_dir(out_dir)
    audio = result.pop("_audio", None)
    c, systems, metrics = result["codec"], result["systems"], result["metrics"]
    unit = bitrate_unit(c["kind"])
    figs: list[tuple[str, str]] = []
    if plots:
        best, worst = result["best_file"], result["worst_file"]
        if audio:
            if c["kind"] == "audio":
                pairs = [(f"{what} {f}", audio[f]["ref"][0], audio[f]["codec"][0], audio[f]["rate"])
                         for what, f in (("best", best), ("worst", worst))]
                _plot_spectrograms(out / "spectrograms.png", pairs)
                figs.append((f"Best and worst file (by {result['primary_metric']}), original vs reconstruction",
                             "spectrograms.png"))
            else:
                plot_series(out / "series.png", [audio[best]["ref"], audio[worst]["ref"]],
                            [audio[best]["codec"], audio[worst]["codec"]])
                figs.append((f"Best ({best}) and worst ({worst}) series: input vs reconstruction", "series.png"))
        plot_codebook_usage(out / "codebook_usage.png", torch.tensor(result["codebook"]["counts"]))
        figs.append(("Codebook usage per stage (codes sorted by frequency)", "codebook_usage.png"))
        _plot_curve(out / "rate_curve.png", result)
        figs.append(("Metrics against bitrate (vqaudio and PCA over n_q; baselines as points)", "rate_curve.png"))
    result["figures"] = [f for _, f in figs]
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(_finite(result), indent=1, sort_keys=True, allow_nan=False) + "\n")

    n = len(result["files"])
    lines = [f"# vqaudio evaluation: {c['name']}", "",
             f"Codec `{c['name']}` (sha256 {c['sha256'][:12]}…): {c['kind']}, "
             + (f"{c['sample_rate']} Hz, " if c["sample_rate"] else "")
             + f"hop {c['hop']}, n_q {c['n_q']}, K {c['codebook_size']}. {n} file(s); "
             f"evaluation took {result['seconds']:.1f} s. Bitrates are measured ({unit}): .vqa payload for vqaudio "
             "(whole-file rate incl. header in the n_q table), transmitted bits for the baselines.", "",
             f"## Mean over {n} file(s)", ""]
    order = sorted(systems, key=lambda k: (systems[k]["system"] != "codec", systems[k]["system"] != "pca",
                                           -systems[k]["bitrate"]))
    lines += _table(["system", f"bitrate ({unit})"] + [_LABELS.get(m, m) for m in metrics],
                    [[k, rate(systems[k]["bitrate"])] + [metric(systems[k]["mean"][m]) for m in metrics] for k in order])
    lines += ["", "## Quality against n_q", ""]
    rows = []
    for k in result["n_qs"]:
        s, p = systems[f"vqaudio n_q={k}"], systems.get(f"pca n_q={k}")
        rows.append([str(k), rate(c["nominal_bitrate"][str(k)]), rate(s["bitrate"]), rate(s["file_bitrate"])]
                    + [metric(s["mean"][m]) + (f" (PCA {metric(p['mean'][m])})" if p else "") for m in metrics])
    lines += _table(["n_q", "nominal", "payload", "file"] + [_LABELS.get(m, m) for m in metrics], rows)
    pcas = [s for s in systems.values() if s["system"] == "pca"]
    if pcas:
        lines += ["", "PCA: frames of 2×hop (sqrt-Hann, hop " + str(c["hop"]) + "), fitted on the "
                  + result["pca_fit"] + "; " + ", ".join(f"n_q={s['n_q']}: {s['components']} components × "
                                                         f"{s['bits_per_coefficient']} bits" for s in pcas) + "."]
    cb = result["codebook"]
    lines += ["", f"## Codebook usage (n_q={cb['n_q']}, K={c['codebook_size']})", ""]
    lines += _table(["stage", "codes used", "perplexity", "entropy (bits)"],
                    [[str(q), f"{u:.1%}", f"{p:.1f}", f"{h:.2f}"] for q, (u, p, h) in
                     enumerate(zip(cb["usage"], cb["perplexity"], cb["entropy_bits"], strict=True))])
    main = systems[f"vqaudio n_q={max(result['n_qs'])}"]["per_file"]
    lines += ["", f"## Per file (vqaudio n_q={max(result['n_qs'])}; best `{result['best_file']}`, "
              f"worst `{result['worst_file']}` by {result['primary_metric']})", ""]
    lines += _table(["file", f"bitrate ({unit})"] + [_LABELS.get(m, m) for m in metrics],
                    [[f, rate(main[f]["bitrate"])] + [metric(main[f][m]) for m in metrics] for f in result["files"]])
    if result["skipped"]:
        lines += ["", "## Not evaluated", ""] + [f"- {k}: {v}" for k, v in sorted(result["skipped"].items())]
    for title, f in figs:
        lines += ["", f"### {title}", "", f"![{title}]({f})"]
    md = out / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return md
