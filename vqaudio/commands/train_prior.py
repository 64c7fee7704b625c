"""``vqaudio train-prior``: train the WaveNet token prior on the codes a codec gives a folder of audio/series.

Tokens are extracted once and cached (EXP/tokens, or --cache) keyed by the codec's weights sha256 and each
file's sha256; .vqa files in --data are used as they are. Training is ``vqaudio.train.fit``: EXP/last
(resumable), EXP/best (lowest held-out NLL), EXP/log.jsonl; also under torchrun (--batch-size is global).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vqaudio.commands.train import TRAIN_FLAGS, _read_json, add_training_arguments
from vqaudio.errors import ConfigError
from vqaudio.progress import progress_wanted

HELP = "train a WaveNet prior over a codec's tokens (for vqaudio sample)"

# flag -> WaveNetConfig field (given flags override --config)
MODEL_FLAGS = {"layers": "layers", "cycle": "cycle", "kernel_size": "kernel_size", "residual_channels": "residual_channels",
               "gate_channels": "gate_channels", "skip_channels": "skip_channels", "head_channels": "head_channels"}


def register(subparsers) -> None:
    p = subparsers.add_parser("train-prior", help=HELP, description=HELP + ". " + " ".join(__doc__.splitlines()[2:]))
    p.add_argument("--codec", required=True, metavar="CODEC", help="codec name, checkpoint or experiment folder")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="folder (recursive) or manifest (.txt/.lst/.list/.scp) of audio/series or .vqa files")
    p.add_argument("--exp", required=True, metavar="DIR", help="experiment folder (checkpoints, log.jsonl, tokens)")
    p.add_argument("--config", metavar="JSON", help='WaveNetConfig fields, or {"model": {...}, "train": {...}}')
    p.add_argument("--resume", action="store_true", help="continue the run in --exp exactly where it stopped")
    p.add_argument("--cache", metavar="DIR", help="token cache folder (default EXP/tokens; share it between runs)")
    p.add_argument("--n-q", type=int, metavar="N", help="quantiser levels to model (default: all of the codec's)")
    p.add_argument("--labels", action="store_true",
                   help="condition on a label: the first-level sub-folder of each file under --data (for a manifest: under its folder, or the listed files' common folder)")
    p.add_argument("--seq-len", type=int, default=256, metavar="F", help="training window in frames (default 256)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of files held out (default 0.1)")
    g = p.add_argument_group("model (override --config)")
    g.add_argument("--layers", type=int, help="dilated conv layers (default 20)")
    g.add_argument("--cycle", type=int, help="dilations 1..2**(cycle-1), repeated (default 10)")
    g.add_argument("--kernel-size", type=int, metavar="K", help="taps of each dilated causal conv (default 2)")
    g.add_argument("--residual-channels", type=int, metavar="C", help="channels of the residual stream (default 64)")
    g.add_argument("--gate-channels", type=int, metavar="C", help="conv output channels, split in tanh/sigmoid halves (default 128)")
    g.add_argument("--skip-channels", type=int, metavar="C", help="channels of the skip connections (default 128)")
    g.add_argument("--head-channels", type=int, metavar="C", help="hidden channels of each output head (default 256)")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vqaudio.figures import metric
    from vqaudio.models.wavenet import WaveNetConfig
    from vqaudio.prior import train_prior
    from vqaudio.train import TrainConfig

    model_d: dict = {}
    train_d: dict = {}
    if args.config:
        d = _read_json(args.config)
        model_d, train_d = (dict(d.get("model", {})), dict(d.get("train", {}))) if set(d) <= {"model", "train"} else (d, {})
    saved = Path(args.exp) / "train.json"
    if args.resume and saved.is_file() and not args.config:
        train_d = dict(_read_json(str(saved)).get("train", {}))  # the run's own settings; flags still override
    model_d.update({f: getattr(args, a) for a, f in MODEL_FLAGS.items() if getattr(args, a) is not None})
    train_d.update({f: getattr(args, a) for a, f in TRAIN_FLAGS.items() if getattr(args, a) is not None})
    train_d["progress"] = progress_wanted(args.progress)  # display, not a training setting: flags and stderr decide
    train_d.setdefault("best_metric", "nll_bits")
    try:
        model_config = WaveNetConfig.from_dict(model_d)
        train_config = TrainConfig.from_dict(train_d)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(str(err), args.config) from None
    if args.seq_len < 1:
        raise ConfigError(f"--seq-len must be >= 1, got {args.seq_len}")
    if not 0 < args.valid_fraction < 1:
        raise ConfigError(f"--valid-fraction must be in (0, 1), got {args.valid_fraction}")
    r = train_prior(args.codec, args.data, args.exp, model_config, train_config, seq_len=args.seq_len, n_q=args.n_q,
                    labels=args.labels, cache_dir=args.cache, valid_fraction=args.valid_fraction, resume=args.resume,
                    progress=train_config.progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"vqaudio train-prior: {r['step']} steps in {args.exp} ({r['steps_per_s']:.2f} steps/s); tokens "
              f"train {r['tokens']['train']} / held-out {r['tokens']['valid']}; held-out NLL "
              f"{metric(r.get('valid_nll_bits'))} bits/token (best, step {r['best_step']}) vs unigram entropy "
              f"{metric(r['unigram_bits'])} bits (held-out unigram cross-entropy {metric(r['unigram_xent_bits'])})",
              file=sys.stderr)
    return 0
