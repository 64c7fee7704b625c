"""``vqaudio eval``: score a codec on held-out files at every n_q next to PCA, Codec2 and Opus baselines.

Writes REPORT_DIR/report.md, report.json (every number) and PNG plots (spectrograms of the best and worst
file, codebook usage, metrics against bitrate). PESQ/STOI need the optional ``pesq``/``pystoi`` packages;
Codec2/Opus need ``c2enc``/``c2dec`` and ``opusenc``/``opusdec`` on PATH (skipped otherwise, said in the report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vqaudio.cli_args import add_postfilter_flag, postfilter_choice
from vqaudio.errors import ConfigError
from vqaudio.filejobs import exists_error
from vqaudio.progress import add_progress_flag, progress_wanted

HELP = "evaluate a codec (metrics, bitrate, baselines) and write a report"


def n_q_list(text: str) -> list[int]:
    """``"1,2,4"`` or ``"1-4"`` -> sorted unique integers."""
    out: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--n-q must look like 1,2,4 or 1-4, got {text!r}") from None
    if not out:
        raise ConfigError(f"--n-q must list at least one level, got {text!r}")
    return sorted(out)


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP, description=HELP + ". " + " ".join(__doc__.splitlines()[2:]))
    p.add_argument("--codec", required=True, metavar="NAME_OR_PATH", help="codec name, checkpoint or experiment folder")
    p.add_argument("--data", required=True, metavar="DIR|MANIFEST", help="folder (recursive), manifest (.txt/.lst/.list/.scp) or file to evaluate")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder (created)")
    p.add_argument("--n-q", metavar="LIST", help="quantiser levels to evaluate, e.g. 1,2,4 or 1-4 (default: all)")
    p.add_argument("--baselines", default="pca,codec2-3200,codec2-2400,opus-6k", metavar="LIST",
                   help="comma-separated baselines among pca, codec2-3200, codec2-2400, opus-6k, or 'none'")
    p.add_argument("--pca-fit", metavar="DIR|MANIFEST", help="files to fit the PCA baseline on (default: the evaluated files)")
    p.add_argument("--pca-max-files", type=int, default=200, metavar="N",
                   help="fit PCA on at most N files, evenly spaced in sorted order (default 200)")
    p.add_argument("--max-files", type=int, metavar="N", help="evaluate only the first N files (sorted)")
    p.add_argument("--device", default="cpu", help="torch device of the codec (default cpu)")
    add_postfilter_flag(p, "the formant post-filter of decoded audio on or off (default: as the model's config says)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (default 1: eval runs many small ops, which extra threads slow down)")
    p.add_argument("--no-plots", action="store_true", help="no PNG figures")
    p.add_argument("--force", action="store_true", help="replace the report already in REPORT_DIR")
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vqaudio.cli_args import device_arg
    from vqaudio.codec import load_codec
    from vqaudio.figures import metric, rate, unit
    from vqaudio.report import eval_files, evaluate, make_output_dir, write_report

    baselines = () if args.baselines.strip() == "none" else tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    if args.max_files is not None and args.max_files < 1:
        raise ConfigError(f"--max-files must be >= 1, got {args.max_files}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.output)
    existing = [out / f for f in ("report.json", "report.md") if (out / f).exists()]
    if existing and not args.force:
        raise exists_error(existing[0])
    device = device_arg(args.device)
    torch.set_num_threads(args.threads)
    codec = load_codec(args.codec, device=device, postfilter=postfilter_choice(args))
    files, names = eval_files(args.data, codec.kind)
    files, names = files[: args.max_files], names[: args.max_files]
    fit = None
    if args.pca_fit and "pca" in baselines:
        fit = eval_files(args.pca_fit, codec.kind)[0]
        step = max(1, len(fit) / max(1, args.pca_max_files))
        fit = [fit[int(i * step)] for i in range(min(len(fit), args.pca_max_files))]
    n_qs = n_q_list(args.n_q) if args.n_q is not None else None
    make_output_dir(args.output)  # before the (long) evaluation, not after it
    result = evaluate(codec, files, names, n_qs, baselines, fit, keep=not args.no_plots, progress=progress_wanted(args.progress))
    md = write_report(result, args.output, plots=not args.no_plots)
    top = result["systems"][f"vqaudio n_q={max(result['n_qs'])}"]
    means = ", ".join(f"{k} {metric(v)}" for k, v in top["mean"].items())
    print(f"vqaudio eval: {len(files)} file(s), n_q={max(result['n_qs'])} at {rate(top['bitrate'])} {unit(codec.kind)}: "
          f"{means}; report {md}", file=sys.stderr)
    return 0
