"""``vqaudio info``: the header of a ``.vqa`` token file, or a model's config and bitrate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqaudio.figures import rate

HELP = "show a .vqa token file's or .vqs token stream's header, or a model's config and bitrate"


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help=HELP, description=HELP + "; without an argument, list the models "
                              "(as `vqaudio models`).")
    p.add_argument("target", nargs="?", metavar="FILE|MODEL", help=".vqa or .vqs file, model folder, or shipped or user model name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def token_file_info(path: Path) -> dict:
    """The validated header of a token file plus its size, duration and bitrates."""
    from vqaudio.registry import find_by_sha256
    from vqaudio.tokenstream import is_stream, load_any

    codes = load_any(path)
    with open(path, "rb") as f:
        fmt = "vqs token stream" if is_stream(f.read(8)) else "vqa token file"
    found = find_by_sha256(codes.model_sha256)
    info = {"file": str(path), "format": fmt, "bytes": path.stat().st_size, **codes.header(),
            "decoded_with": f"{found[0]} ({found[1]})" if found else None}
    if codes.kind == "audio":
        seconds = codes.length / codes.orig_sample_rate
        info["seconds"] = round(seconds, 6)
        info["payload_bitrate"] = codes.sample_rate / codes.hop * codes.n_q * codes.bits * codes.items
        info["file_bitrate"] = round(8 * info["bytes"] / seconds, 3)
    else:  # series: the payload per sample of one channel (frames are padded to whole hops), and the file's
        info["bits_per_sample"] = codes.items * codes.n_q * codes.frames * codes.bits / (codes.length * codes.channels)
        info["file_bits_per_sample"] = 8 * info["bytes"] / (codes.length * codes.channels)
    return info


def model_info(spec: str | None) -> dict:
    """Name, folder, identity, geometry, bitrate per number of levels and the config of a model."""
    from vqaudio.codec import load_codec
    from vqaudio.registry import resolve

    name, folder = resolve(spec)
    codec = load_codec(spec)
    m = codec.model
    return {
        "model": name, "folder": str(folder), "sha256": codec.sha256, "kind": codec.kind,
        "sample_rate": codec.config.sample_rate, "channels": codec.channels, "hop": codec.hop,
        "frame_rate": m.frame_rate, "n_q": codec.n_q, "codebook_size": codec.codebook_size,
        "bits_per_code": codec.bits_per_code,
        "n_q_options": list(range(1, codec.n_q + 1)),
        **({"bits_per_sample": {str(n): codec.bitrate(n) for n in range(1, codec.n_q + 1)}, "min_length": codec.min_length,
            "channels_coded": "each channel alone (any count)" if codec.per_channel else f"{codec.channels} together"}
           if codec.kind == "series" else {"bitrate": {str(n): codec.bitrate(n) for n in range(1, codec.n_q + 1)},
                                           "postfilter": "on" if codec.postfilter else "off"}),
        "encoder_receptive_field": m.encoder_receptive_field, "decoder_receptive_field": m.decoder_receptive_field,
        "parameters": sum(p.numel() for p in m.parameters()), "config": codec.config.to_dict(),
    }


def _print(info: dict, indent: str = "") -> None:
    """``key: value`` lines, floats rounded (``--json`` keeps every digit)."""
    for k, v in info.items():
        if isinstance(v, dict) and v and k != "model":
            print(f"{indent}{k}:")
            _print(v, indent + "  ")
        elif isinstance(v, float):
            print(f"{indent}{k}: {rate(v) if 'bitrate' in k or k.isdigit() else f'{v:.6g}'}")
        else:
            print(f"{indent}{k}: {json.dumps(v) if isinstance(v, (dict, list)) or v is None else v}")


def run(args: argparse.Namespace) -> int:
    target = args.target
    if target is None:
        from vqaudio.commands import models

        return models.run(args)
    path = Path(target)
    token = path.is_file() or path.suffix.lower() in (".vqa", ".vqs")
    info = token_file_info(path) if token else model_info(target)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print(info)
    return 0
