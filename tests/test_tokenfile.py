"""The ``.vqa`` token file: bit packing, round trips (hypothesis) and every kind of damage."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqaudio import tokenfile as tf
from vqaudio.errors import TokenFileError

SHA = "0123456789abcdef" * 4


def make_codes(items=2, n_q=3, length=224, k=1000, kind="audio", sr=8000, orig_sr=8000, hop=32, seed=0) -> tf.Codes:
    """Consistent metadata around random codes ``[items, n_q, F]`` (extremes 0 and K-1 included)."""
    model_length = math.ceil(length * sr / orig_sr) if kind == "audio" else length
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, k, (items, n_q, -(-model_length // hop)), generator=g)
    if codes.numel() >= 2:
        codes.view(-1)[0], codes.view(-1)[-1] = 0, k - 1
    channels = items if kind == "audio" else 3
    stats = {"mean": [0.5, -1.25, 3e-8][:channels], "std": [1.0, 2.5, 0.1][:channels]} if kind == "series" else None
    rates = (sr, orig_sr) if kind == "audio" else (None, None)
    return tf.Codes(codes, kind=kind, model="tiny", model_sha256=SHA, sample_rate=rates[0], orig_sample_rate=rates[1],
                    length=length, channels=channels, hop=hop, codebook_size=k,
                    chunking={"chunk_frames": 4096, "overlap_frames": 12}, stats=stats)


def assert_same(a: tf.Codes, b: tf.Codes) -> None:
    assert a.header() == b.header()
    assert a.codes.dtype == b.codes.dtype == torch.int64
    assert torch.equal(a.codes, b.codes)


def craft(header: dict, values: np.ndarray, version: int | None = None) -> bytes:
    """A file with valid CRCs around arbitrary header/payload: tests validation beyond the checksums.

    The payload is packed as ``version`` says (default: 2 when the header has a group, else 1): version 2
    grouped by the header's codebook size, version 1 plain at the header's bits (1 if they are unusable).
    """
    version = version if version is not None else (2 if "group" in header else 1)
    hb = json.dumps(header).encode()
    head = tf.MAGIC + struct.pack("<HI", version, len(hb)) + hb
    head += struct.pack("<I", zlib.crc32(head))
    k, bits = header.get("codebook_size"), header.get("bits")
    if version == 2 and isinstance(k, int) and k >= 2:
        payload = tf.pack_codes(values, k)
    else:
        payload = tf.pack_bits(values, bits if isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 32 else 1)
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def read_error(path: Path) -> str:
    with pytest.raises(TokenFileError) as info:
        tf.read(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "good.vqa"
    tf.write(path, make_codes())
    return path, path.read_bytes()


# --- bit packing -------------------------------------------------------------------------------

@pytest.mark.parametrize("k, bits", [(2, 1), (3, 65 / 41), (4, 2), (5, 137 / 59), (1000, 588 / 59), (1024, 10),
                                     (1025, 641 / 64), (2**16, 16), (2**32 - 1, 32), (2**32, 32)])
def test_code_bits(k, bits):
    assert tf.code_bits(k) == bits


@pytest.mark.parametrize("k", [3, 5, 7, 45, 125, 240, 625, 1000, 1025, 4375, 64000, 2**20 + 1, 2**31 + 1])
def test_packing_is_the_fewest_bits_per_code_over_groups_of_up_to_64(k):
    group, bits = tf.packing(k)
    assert 2 <= group <= 64 and bits == (k**group - 1).bit_length()  # 2^(bits - 1) < k^group <= 2^bits
    assert all(bits * g <= (k**g - 1).bit_length() * group for g in range(1, 65))
    assert math.log2(k) <= bits / group < math.ceil(math.log2(k)) and bits / group < math.log2(k) * 1.002
    assert tf.packing(2**10) == (1, 10) and tf.packing(2) == (1, 1)  # powers of two: one code per group


def test_grouped_packing_known_layout():
    # K = 3: groups of 41 codes in 65 bits; two codes left over go into ceil(2 log2 3) = 4 bits as 3 * c0 + c1
    values = np.array([2] + [0] * 39 + [1] + [2, 1])
    packed = tf.pack_codes(values, 3)
    assert len(packed) == math.ceil((65 + 4) / 8)
    number = int.from_bytes(packed, "big") >> (len(packed) * 8 - 69)  # the 69 bits, MSB first
    assert number >> 4 == 2 * 3**40 + 1 and number & 0xF == 2 * 3 + 1
    np.testing.assert_array_equal(tf.unpack_codes(packed, 3, values.size), values)


@settings(max_examples=100, deadline=None)
@given(k=st.one_of(st.integers(2, 5000), st.sampled_from([1000, 2**31 + 1, 2**32 - 1, 3**20])), n=st.integers(0, 400),
       seed=st.integers(0, 2**32 - 1))
def test_pack_codes_round_trip(k, n, seed):
    v = np.random.default_rng(seed).integers(0, k, size=n, dtype=np.int64)
    if n:
        v[-1] = k - 1
    packed = tf.pack_codes(v, k)
    group, bits = tf.packing(k)
    full, rest = divmod(n, group)
    assert len(packed) == (full * bits + ((k**rest - 1).bit_length() if rest else 0) + 7) // 8
    np.testing.assert_array_equal(tf.unpack_codes(packed, k, n), v)


def test_pack_bits_known_layout():
    # 3-bit codes 5, 1, 7 -> 101 001 111 (+ 7 zero padding bits), MSB first
    assert tf.pack_bits(np.array([5, 1, 7]), 3) == bytes([0b10100111, 0b10000000])
    assert tf.unpack_bits(bytes([0b10100111, 0b10000000]), 3, 3).tolist() == [5, 1, 7]
    assert tf.pack_bits(np.array([], dtype=np.int64), 5) == b""


def test_pack_bits_spans_blocks(monkeypatch):
    monkeypatch.setattr(tf, "_BLOCK", 64)  # many blocks, each ending mid-byte for odd widths
    v = np.random.default_rng(0).integers(0, 2**11, size=1001)
    packed = tf.pack_bits(v, 11)
    assert len(packed) == math.ceil(1001 * 11 / 8)
    np.testing.assert_array_equal(tf.unpack_bits(packed, 11, 1001), v)


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 32), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, n, seed):
    v = np.random.default_rng(seed).integers(0, 2**bits, size=n, dtype=np.int64)
    packed = tf.pack_bits(v, bits)
    assert len(packed) == (n * bits + 7) // 8
    np.testing.assert_array_equal(tf.unpack_bits(packed, bits, n), v)


# --- round trips -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.one_of(st.integers(2, 70_000), st.sampled_from([2, 3, 255, 256, 257, 1023, 1024, 1025, 2**20 + 1, 2**32])),
    items=st.integers(1, 3), n_q=st.integers(1, 9), length=st.integers(1, 20_000), hop=st.integers(1, 400),
    rates=st.sampled_from([(8000, 8000), (8000, 44100), (16000, 22050), (24000, 8000)]),
    kind=st.sampled_from(["audio", "series"]), seed=st.integers(0, 1000),
)
def test_round_trip(tmp_path, k, items, n_q, length, hop, rates, kind, seed):
    codes = make_codes(items if kind == "audio" else 1, n_q, length, k, kind, *rates, hop=hop, seed=seed)
    path = tmp_path / "x.vqa"
    tf.write(path, codes)
    back = tf.read(path)
    assert_same(codes, back)
    assert back.source == str(path)
    group, bits = tf.packing(k)
    full, rest = divmod(codes.codes.numel(), group)
    payload = math.ceil((full * bits + ((k**rest - 1).bit_length() if rest else 0)) / 8)
    assert path.read_bytes()[8:10] == struct.pack("<H", 1 if group == 1 else 2)  # powers of two stay version 1
    assert path.stat().st_size == len(tf.MAGIC) + 6 + len(json.dumps(codes.header(), separators=(",", ":"), sort_keys=True)) + 4 + payload + 4
    assert [p.name for p in tmp_path.iterdir()] == ["x.vqa"]  # no temp file left behind


def test_series_stats_round_trip_exactly(tmp_path):
    codes = make_codes(1, 2, 150, 256, kind="series")
    codes.stats = {"mean": [float(np.float32(0.1)), 1e-30, -7.0], "std": [float(np.float32(1 / 3)), 1e30, 2.0]}
    tf.write(tmp_path / "s.vqa", codes)
    back = tf.read(tmp_path / "s.vqa")
    assert back.stats == codes.stats and back.sample_rate is None and back.kind == "series"


# --- damage --------------------------------------------------------------------------------------

def test_truncated_at_every_byte(good, tmp_path):
    path, data = good
    bad = tmp_path / "cut.vqa"
    messages = set()
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        messages.add(read_error(bad).split(": ", 1)[1].split(" (")[0])
    # every region gives a clear reason: magic prefix, header, payload and CRC all say "truncated"
    assert all("truncated" in m or "bad magic" in m for m in messages), messages


def test_every_flipped_byte_is_detected(good, tmp_path):
    path, data = good
    bad = tmp_path / "flip.vqa"
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[i] ^= mask
            bad.write_bytes(bytes(damaged))
            read_error(bad)


@pytest.mark.parametrize("region, expect", [
    ("magic", "bad magic"), ("header", "header (CRC32"), ("hcrc", "header (CRC32"),
    ("payload", "payload (CRC32"), ("crc", "payload (CRC32"), ("hlen", "header"),
])
def test_corruption_messages_name_the_region(good, tmp_path, region, expect):
    path, data = good
    hlen = struct.unpack_from("<I", data, 10)[0]
    where = {"magic": 2, "hlen": 11, "header": 14 + hlen // 2, "hcrc": 14 + hlen + 1, "payload": 14 + hlen + 5, "crc": len(data) - 2}
    damaged = bytearray(data)
    damaged[where[region]] ^= 0x10
    bad = tmp_path / "bad.vqa"
    bad.write_bytes(bytes(damaged))
    assert expect in read_error(bad)


def test_trailing_bytes(good, tmp_path):
    bad = tmp_path / "long.vqa"
    bad.write_bytes(good[1] + b"\0")
    assert "trailing" in read_error(bad)


@pytest.mark.parametrize("content", [b"", b"RIFF\x24\0\0\0WAVEfmt ", b"hello world, not tokens\n", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_foreign_files(tmp_path, content):
    bad = tmp_path / "foreign.vqa"
    bad.write_bytes(content)
    msg = read_error(bad)
    assert ("bad magic" in msg) or (not content and "truncated" in msg)


def test_real_wav_is_foreign(tmp_path, speech_file):
    assert "bad magic" in read_error(speech_file)


def test_missing_file(tmp_path):
    assert "cannot read" in read_error(tmp_path / "nope.vqa")


def test_future_and_unknown_versions(tmp_path):
    c = make_codes()
    for version, expect in ((tf.FORMAT_VERSION + 1, "newer"), (999, "newer"), (0, "unsupported")):
        bad = tmp_path / f"v{version}.vqa"
        bad.write_bytes(craft(c.header(), c.codes.numpy(), version=version))
        assert expect in read_error(bad)


def v1_header(c: tf.Codes) -> dict:
    """The header a version-1 writer gave ``c``: plain ceil(log2 K)-bit codes, no group."""
    header = {key: value for key, value in c.header().items() if key != "group"}
    return {**header, "bits": max(1, (c.codebook_size - 1).bit_length())}


def test_version_1_files_of_any_codebook_size_still_read(tmp_path):
    """Files written before the grouped packing (version 1: ceil(log2 K) bits per code) read unchanged."""
    c = make_codes(k=1000)
    old = tmp_path / "v1.vqa"
    old.write_bytes(craft(v1_header(c), c.codes.numpy(), version=1))
    assert_same(tf.read(old), c)
    tf.write(tmp_path / "v2.vqa", c)  # the same codes now take fewer bytes
    assert (tmp_path / "v2.vqa").stat().st_size < old.stat().st_size


def test_out_of_range_codes_in_file(tmp_path):
    c = make_codes(k=1000)  # version 1: 10 bits hold up to 1023: a writer bug or tampering can put 1000..1023 there
    values = c.codes.numpy().copy()
    values[0, 1, 3] = 1000
    bad = tmp_path / "range.vqa"
    bad.write_bytes(craft(v1_header(c), values, version=1))
    assert "code 1000 out of range for codebook size 1000" in read_error(bad)
    values[0, 1, 3] = 999
    bad.write_bytes(craft(v1_header(c), values, version=1))
    assert tf.read(bad).codes[0, 1, 3] == 999  # the crafted file itself is otherwise valid


def test_out_of_range_group_in_file(tmp_path):
    """Version 2: a group stored as a number >= K^group (588 bits hold more than 1000^59) is out of range."""
    c = make_codes(k=1000)
    tf.write(tmp_path / "good.vqa", c)
    data = bytearray((tmp_path / "good.vqa").read_bytes())
    hlen = struct.unpack_from("<I", data, 10)[0]
    start = 18 + hlen
    data[start : start + 8] = b"\xff" * 8  # the first group's most significant bits: its first code >= 1000
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    bad = tmp_path / "range.vqa"
    bad.write_bytes(bytes(data))
    assert "out of range for codebook size 1000" in read_error(bad)


@pytest.mark.parametrize("edit", [
    {"frames": 8}, {"n_q": 0}, {"items": 5}, {"bits": 11}, {"codebook_size": 1}, {"hop": 0}, {"length": 10_000},
    {"group": 58}, {"group": 1}, {"group": "59"}, {"codebook_size": 1024}, {"codebook_size": 999},
    {"kind": "video"}, {"sample_rate": None}, {"model": {"name": "tiny"}}, {"model": {"name": "t", "sha256": "xyz"}},
    {"stats": {"mean": [0.0]}}, {"chunking": {"chunk_frames": -1}}, {"channels": "2"}, {"length": True},
])
def test_inconsistent_header_with_valid_crc(tmp_path, edit):
    c = make_codes()
    header = {**c.header(), **edit}
    n = header["items"] * header["n_q"] * header["frames"] if all(
        isinstance(header[k], int) for k in ("items", "n_q", "frames")) else 0
    values = np.resize(c.codes.numpy().reshape(-1), max(n, 0))
    bad = tmp_path / "incons.vqa"
    bad.write_bytes(craft(header, values))
    assert "invalid token file" in read_error(bad)


def test_header_not_json(tmp_path):
    hb = b"{not json"
    head = tf.MAGIC + struct.pack("<HI", tf.FORMAT_VERSION, len(hb)) + hb
    head += struct.pack("<I", zlib.crc32(head))
    bad = tmp_path / "nojson.vqa"
    bad.write_bytes(head + struct.pack("<I", zlib.crc32(head)))
    assert "invalid token file header" in read_error(bad)


# --- writing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, expect", [
    (lambda c: c.codes.view(-1).__setitem__(4, 1000), "out of range"),
    (lambda c: c.codes.view(-1).__setitem__(4, -1), "out of range"),
    (lambda c: setattr(c, "codes", c.codes.to(torch.int32)), "int64"),
    (lambda c: setattr(c, "length", 1), "frames do not match"),
    (lambda c: setattr(c, "channels", 3), "item"),
    (lambda c: setattr(c, "codebook_size", 1), "codebook_size"),
])
def test_write_rejects_bad_codes_and_keeps_the_old_file(good, mutate, expect):
    path, data = good
    c = make_codes()
    mutate(c)
    with pytest.raises(TokenFileError, match=expect) as info:
        tf.write(path, c)
    assert str(path) in str(info.value)
    assert path.read_bytes() == data  # the good file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["good.vqa"]


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(TokenFileError, match="cannot write"):
        tf.write(tmp_path / "no" / "such" / "x.vqa", make_codes())


def test_large_file_is_fast(tmp_path):
    """One hour of 8 codebooks at 250 frames/s (hop 32, 8 kHz): vectorised packing, well under seconds."""
    import time

    frames = 3600 * 250
    c = make_codes(1, 8, frames * 32, 1024, sr=8000, orig_sr=8000, hop=32)
    t0 = time.perf_counter()
    tf.write(tmp_path / "hour.vqa", c)
    back = tf.read(tmp_path / "hour.vqa")
    assert time.perf_counter() - t0 < 10
    assert torch.equal(back.codes, c.codes)
    assert (tmp_path / "hour.vqa").stat().st_size < frames * 8 * 10 / 8 + 2048


def craft_raw(hb: bytes, payload: bytes, version: int = 1) -> bytes:
    """A file with valid CRCs around raw header bytes and a raw payload."""
    head = tf.MAGIC + struct.pack("<HI", version, len(hb)) + hb
    head += struct.pack("<I", zlib.crc32(head))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


@pytest.mark.parametrize("bits", [40, 33, 64])
def test_bits_beyond_the_supported_width(tmp_path, bits):
    """A valid-CRC header whose codebook_size and bits agree but exceed 32 bits is refused before unpacking."""
    c = make_codes()
    header = {**v1_header(c), "codebook_size": 2**bits, "bits": bits}
    count = header["items"] * header["n_q"] * header["frames"]
    bad = tmp_path / "wide.vqa"
    bad.write_bytes(craft_raw(json.dumps(header).encode(), bytes((count * bits + 7) // 8)))
    msg = read_error(bad)
    assert "invalid token file header" in msg and f"bits = {bits}" in msg


def test_deeply_nested_header(tmp_path):
    bad = tmp_path / "nested.vqa"
    bad.write_bytes(craft_raw(b"[" * 200_000, b""))
    assert "invalid token file header" in read_error(bad)


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**39, 1e39], ids=["int400", "-int400", "int39", "float39"])
def test_stats_too_large_for_a_float(tmp_path, value):
    """A 400-digit integer (or a number beyond float32) in the series stats: TokenFileError, not OverflowError."""
    c = make_codes(items=1, kind="series")
    header = c.header()
    header["stats"]["mean"][1] = value
    bad = tmp_path / "huge.vqa"
    bad.write_bytes(craft(header, c.codes.numpy()))
    assert "invalid token file (stats must be" in read_error(bad)


@pytest.mark.parametrize("key, value", [("columns", ["a"]), ("columns", [1, 2, 3]), ("columns", "abc"), ("index", 3), ("ndim", 1), ("ndim", 3), ("ndim", True),
    ("index_values", {"start": "0", "step": 0, "format": "%.0f"}),
    ("index_values", {"start": "Monday", "step": 1e6, "format": "%Y-%m-%d"}),
    ("index_values", {"start": "0", "step": 1, "format": "%.0f", "extra": 1}), ("index_values", "0,1,2")])
def test_bad_series_names(tmp_path, key, value):
    """A series file's column names must be one string per channel, its index column a string, ndim 1 (a vector:
    one channel) or 2, and a regular index a start its format reads with a positive step."""
    c = make_codes(items=1, kind="series")
    c.columns, c.index = ["temp", "rh", "wind"], "date"
    good = tmp_path / "good.vqa"
    tf.write(good, c)
    assert (tf.read(good).columns, tf.read(good).index) == (c.columns, "date")
    bad = tmp_path / "bad.vqa"
    bad.write_bytes(craft(c.header() | {key: value}, c.codes.numpy()))
    assert f"invalid token file ({key}" in read_error(bad)
    c.index_values = {"start": "2024-03-01", "step": 86400e6, "format": "%Y-%m-%d"}
    tf.write(good, c)
    assert tf.read(good).index_values == c.index_values
