"""``vqaudio train``: train a VQ-VAE on a folder, manifest or aeon data set (also under torchrun).

Checkpoints go to EXP/last (resumable) and EXP/best; metrics to EXP/log.jsonl; figures to EXP/plots.
Several processes: ``torchrun --nproc_per_node=N -m vqaudio train ...`` (--batch-size is global).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from vqaudio.errors import ConfigError
from vqaudio.progress import add_progress_flag, progress_wanted

HELP = "train a VQ-VAE tokenizer on audio or time series"

# flag -> VQVAEConfig field (given flags override --config)
MODEL_FLAGS = {"sample_rate": "sample_rate", "strides": "strides", "n_q": "n_q", "codebook_size": "codebook_size",
               "hidden": "hidden", "max_hidden": "max_hidden", "dim": "dim", "activation": "activation",
               "quantizer_dropout": "quantizer_dropout", "encoder_hidden": "encoder_hidden",
               "encoder_max_hidden": "encoder_max_hidden", "encoder_dilations": "encoder_dilations",
               "decoder_frame_dilations": "decoder_frame_dilations", "decoder_frame_kernel": "decoder_frame_kernel",
               "decoder_frame_compress": "decoder_frame_compress", "encoder_causal": "encoder_causal", "decoder_causal": "decoder_causal"}
TRAIN_FLAGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup_steps": "warmup_steps",
               "schedule": "schedule", "grad_clip": "grad_clip", "log_every": "log_every", "valid_every": "valid_every",
               "valid_batches": "valid_batches", "checkpoint_every": "checkpoint_every", "keep_every": "keep_every", "seed": "seed",
               "num_workers": "num_workers", "device": "device", "best_metric": "best_metric", "best_mode": "best_mode"}


# quantiser flag -> VQVAEConfig field (given flags override --config)
QUANTIZER_FLAGS = {"quantizer": "quantizer", "levels": "levels", "codebook_dim": "codebook_dim",
                   "l2_normalize": "l2_normalize", "rotation_trick": "rotation_trick",
                   "entropy_loss_weight": "entropy_loss_weight", "spherical": "spherical",
                   "inv_temperature": "inv_temperature", "noise_dropout": "noise_dropout"}


def add_quantizer_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The quantiser family and its options (see ``QUANTIZER_FLAGS`` and ``VQVAEConfig``)."""
    q = p.add_argument_group("quantiser (override --config)")
    q.add_argument("--quantizer", choices=["vq", "fsq", "lfq", "simvq"],
                   help="residual quantiser family: vector (default), finite scalar, lookup-free, SimVQ")
    q.add_argument("--levels", metavar="8,5,5,5",
                   help="fsq: values per code dimension; --codebook-size defaults to their product")
    q.add_argument("--noise-dropout", type=float, metavar="P",
                   help="fsq: in training, round only 1 - P of the values, the others get uniform noise (default 0.5)")
    q.add_argument("--codebook-dim", type=int, metavar="N", help="vq: low-dimensional code space (learned maps in and out)")
    q.add_argument("--l2-normalize", action=argparse.BooleanOptionalAction, help="vq: look codes up by cosine similarity")
    q.add_argument("--rotation-trick", action=argparse.BooleanOptionalAction,
                   help="vq, simvq: gradients through the rotation onto the codes (Fifty et al.) instead of straight through")
    q.add_argument("--entropy-loss-weight", type=float, metavar="W", help="lfq: weight of the entropy regulariser")
    q.add_argument("--spherical", action=argparse.BooleanOptionalAction, help="lfq: binary spherical quantisation (BSQ)")
    q.add_argument("--inv-temperature", type=float, metavar="T",
                   help="lfq: inverse temperature of the entropy regulariser's code distribution (default 100)")
    return q


def quantizer_overrides(args: argparse.Namespace, model: dict) -> dict:
    """The model-config fields the quantiser flags set; for fsq without a codebook size, the levels' product."""
    if args.levels is not None:
        args.levels = ints_arg(args.levels, "--levels", "8,5,5,5")
    given = {f: getattr(args, a) for a, f in QUANTIZER_FLAGS.items() if getattr(args, a) is not None}
    merged = {**model, **given}
    levels = merged.get("levels")
    if merged.get("quantizer") == "fsq" and "codebook_size" not in merged and isinstance(levels, list) and levels \
            and all(isinstance(v, int) for v in levels):
        given["codebook_size"] = math.prod(levels)
    return given


def add_training_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The flags of ``TrainConfig`` shared by ``train`` and ``train-prior`` (see ``TRAIN_FLAGS``)."""
    t = p.add_argument_group("training (override --config)")
    t.add_argument("--steps", type=int, metavar="N", help="optimiser steps in all (default 20000)")
    t.add_argument("--batch-size", type=int, metavar="B", help="global batch size")
    t.add_argument("--lr", type=float, metavar="LR", help="peak AdamW learning rate (default 3e-4)")
    t.add_argument("--warmup-steps", type=int, metavar="N", help="linear learning-rate warm-up steps (default 0)")
    t.add_argument("--schedule", choices=["constant", "cosine"],
                   help="learning rate after warm-up: constant, or cosine down to 0.1 x --lr (default cosine)")
    t.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the global gradient norm (default 1; 0: off)")
    t.add_argument("--log-every", type=int, metavar="N", help="write training metrics to EXP/log.jsonl every N steps (default 10)")
    t.add_argument("--valid-every", type=int, metavar="N", help="validate (and maybe update EXP/best) every N steps (default 500)")
    t.add_argument("--valid-batches", type=int, metavar="N", help="validation batches per validation (default 8; 0: all)")
    t.add_argument("--checkpoint-every", type=int, metavar="N", help="save the resumable EXP/last every N steps (default 500)")
    t.add_argument("--keep-every", type=int, metavar="N",
                   help="also keep the model every N steps in EXP/snapshots/ (to `vqaudio average`); default 0: none")
    t.add_argument("--seed", type=int, metavar="S", help="random seed of initialisation and data order (default 0)")
    t.add_argument("--num-workers", type=int, metavar="N", help="data loader worker processes (default 0: load in the main process)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default auto: cuda when there is a GPU)")
    t.add_argument("--best-metric", metavar="NAME",
                   help="validation metric that picks best/ (default loss; e.g. pesq_nb, stoi, mel; nll_bits for a prior)")
    t.add_argument("--best-mode", choices=["auto", "min", "max"],
                   help="keep the lowest or highest --best-metric (auto: highest for pesq_nb, pesq_wb, stoi, si_snr)")
    add_progress_flag(t)
    return t


def ints_arg(text: str, flag: str = "--strides", example: str = "2,4,4") -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers like {example}, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help=HELP, description=HELP + ". " + " ".join(__doc__.splitlines()[2:]))
    p.add_argument("--data", required=True, metavar="DIR|MANIFEST|aeon:NAME",
                   help="folder (recursive) or manifest (.txt/.lst/.list/.scp, a path per line) of audio or .npy/.csv/.tsv series, or aeon:NAME")
    p.add_argument("--exp", required=True, metavar="DIR", help="experiment folder (checkpoints, log.jsonl, plots)")
    p.add_argument("--config", metavar="JSON",
                   help='model config JSON (VQVAEConfig fields), or {"model": {...}, "train": {...}, "adversarial": {...}, "augment": {...}}')
    p.add_argument("--resume", action="store_true", help="continue the run in --exp exactly where it stopped")
    p.add_argument("--init", metavar="MODEL",
                   help="warm-start a new run from this model's weights (a folder or a shipped name; same model config)")
    p.add_argument("--segment", type=int, metavar="S", help="training crop length in samples (default: 4096 audio, longest series)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of files held out for validation (default 0.1)")
    g = p.add_argument_group("model (override --config)")
    g.add_argument("--sample-rate", type=int, metavar="SR", help="model sample rate in Hz (audio; default 8000)")
    g.add_argument("--strides", metavar="2,4,4", help="encoder strides; hop = their product")
    g.add_argument("--n-q", type=int, metavar="N", help="residual quantiser stages")
    g.add_argument("--codebook-size", type=int, metavar="K", help="codes per stage")
    g.add_argument("--hidden", type=int, help="channels of the first conv layer")
    g.add_argument("--max-hidden", type=int, help="channel cap of the deepest layers")
    g.add_argument("--encoder-hidden", type=int, help="encoder only: channels of the first conv layer (default --hidden)")
    g.add_argument("--encoder-max-hidden", type=int, help="encoder only: channel cap (default --max-hidden)")
    g.add_argument("--encoder-dilations", metavar="1,3,9", help="encoder only: residual units per block, by dilation")
    g.add_argument("--decoder-frame-dilations", metavar="1,3,9",
                   help="decoder only: causal residual units at the frame rate, by dilation (default none; with --init "
                        "of a model without them, they start at identity)")
    g.add_argument("--decoder-frame-kernel", type=int, metavar="K",
                   help="kernel of those units (default the model's kernel: 7)")
    g.add_argument("--decoder-frame-compress", type=int, metavar="N",
                   help="bottleneck of those units: channels // N inside (default 2; a stream reads their weights once "
                        "per push, so 4 streams faster)")
    g.add_argument("--dim", type=int, help="latent (codebook vector) dimension")
    g.add_argument("--causal", choices=["encoder", "decoder", "both"], default=None,
                   help="latency budget: causal convs (no lookahead) in the encoder, the decoder or both; streaming "
                        "latency is then one hop (both) instead of the receptive fields' (see codec.latency)")
    g.add_argument("--activation", choices=["elu", "snake"], help="activation of the conv layers (default elu)")
    g.add_argument("--quantizer-dropout", type=float, metavar="P",
                   help="probability of training a step with a random number of levels, so one model serves "
                        "every --n-q (default 0)")
    add_quantizer_arguments(p)
    a = p.add_argument_group("adversarial training (override --config; off by default)")
    a.add_argument("--adv-weight", type=float, metavar="W", help="weight of the multi-scale STFT discriminator's hinge loss")
    a.add_argument("--feature-weight", type=float, metavar="W", help="weight of the relative feature-matching loss")
    a.add_argument("--adv-start-step", type=int, metavar="N", help="switch the discriminator on at step N (default 0)")
    t = add_training_arguments(p)
    t.add_argument("--no-plots", action="store_true", help="no validation figures")
    p.set_defaults(func=run)


def _read_json(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config ({err.strerror})", path) from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"invalid JSON ({err})", path) from None
    if not isinstance(d, dict):
        raise ConfigError("config must be a JSON object", path)
    return d


def run(args: argparse.Namespace) -> int:
    from vqaudio.adversarial import AdversarialConfig
    from vqaudio.augment import AugmentConfig
    from vqaudio.figures import metric
    from vqaudio.models import VQVAEConfig
    from vqaudio.train import TrainConfig, train_vqvae

    model_d: dict = {}
    train_d: dict = {}
    adv_d: dict = {}
    aug_d: dict = {}
    if args.config:
        d = _read_json(args.config)
        if set(d) <= {"model", "train", "adversarial", "augment"}:
            model_d, train_d, adv_d = dict(d.get("model", {})), dict(d.get("train", {})), dict(d.get("adversarial", {}))
            aug_d = dict(d.get("augment", {}))
        else:
            model_d = d
    saved = Path(args.exp) / "train.json"
    if args.resume and saved.is_file() and not args.config:
        run = _read_json(str(saved))  # the run's own settings; flags still override
        train_d = dict(run.get("train", {}))
        adv_d = dict((run.get("task") or {}).get("adversarial") or {})
        aug_d = dict((run.get("task") or {}).get("augment") or {})
    if args.strides is not None:
        args.strides = ints_arg(args.strides)
    if args.encoder_dilations is not None:
        args.encoder_dilations = ints_arg(args.encoder_dilations, "--encoder-dilations", "1,3,9")
    if args.decoder_frame_dilations is not None:
        args.decoder_frame_dilations = ints_arg(args.decoder_frame_dilations, "--decoder-frame-dilations", "1,3,9")
    if args.causal is not None:
        args.encoder_causal, args.decoder_causal = args.causal in ("encoder", "both"), args.causal in ("decoder", "both")
    else:
        args.encoder_causal = args.decoder_causal = None
    model_d.update({f: getattr(args, a) for a, f in MODEL_FLAGS.items() if getattr(args, a) is not None})
    model_d.update(quantizer_overrides(args, model_d))
    train_d.update({f: getattr(args, a) for a, f in TRAIN_FLAGS.items() if getattr(args, a) is not None})
    adv_d.update({f: getattr(args, a) for a, f in (("adv_weight", "weight"), ("feature_weight", "feature_weight"),
                                                  ("adv_start_step", "start_step")) if getattr(args, a) is not None})
    train_d["progress"] = progress_wanted(args.progress)  # display, not a training setting: flags and stderr decide
    try:
        model_config = VQVAEConfig.from_dict(model_d)
        train_config = TrainConfig.from_dict(train_d)
        adversarial = AdversarialConfig.from_dict(adv_d)
        augment = AugmentConfig.from_dict(aug_d)
    except ConfigError as err:
        raise ConfigError(str(err), args.config) from None
    result = train_vqvae(args.data, args.exp, model_config, train_config, segment=args.segment, resume=args.resume,
                         valid_fraction=args.valid_fraction, plots=not args.no_plots, adversarial=adversarial,
                         augment=augment, init=args.init)
    if os.environ.get("RANK", "0") == "0":
        valid = ", ".join(f"{k} {metric(v)}" for k, v in sorted(result["valid"].items()))
        print(f"vqaudio train: {result['step']} steps in {args.exp} ({result['steps_per_s']:.2f} steps/s); best "
              f"{train_config.best_metric} {metric(result['best'])} at step {result['best_step']}; last validation: "
              f"{valid or 'none'}", file=sys.stderr)
    return 0
