"""Every recipe's ``run.sh --smoke`` end to end (stages 0-6) through the real CLI.

Corpora that cannot be downloaded here are built in their real directory layout from the asterisk
speech (resampled to the corpus's rate), and the recipe's db.sh variable points at them. Outputs go
to a temporary $EXP. The CLI runs as ``python -m vqaudio`` from this working tree, one thread each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vqaudio.io import load_audio, resample, save_audio

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
STAGES = ["0.data", "1.manifest", "2.train", "3.eval", "4.tokens", "5.prior", "6.sample"]
pytestmark = pytest.mark.slow


def run_recipe(name: str, exp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "VQAUDIO": f"{sys.executable} -m vqaudio", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "EXP": str(exp), **env}
    return subprocess.run(["bash", str(RECIPES / name / "run.sh"), *args], env=full, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def clips(speech_files) -> list[torch.Tensor]:
    """Twelve real prompts of 1-2.5 s, ``[1, T]`` at 8 kHz."""
    out = [x for x in (load_audio(p)[0] for p in speech_files[3::41]) if 8000 <= x.shape[-1] <= 20000]
    if len(out) < 12:
        pytest.skip("not enough asterisk prompts of 1-2.5 s")
    return out[:12]


def _save(path: Path, x: torch.Tensor, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, resample(x, 8000, rate), rate)


def make_vctk(root: Path, clips: list[torch.Tensor]) -> Path:
    for i, x in enumerate(clips[:8]):
        spk = ("p225", "p226")[i % 2]
        _save(root / "wav48_silence_trimmed" / spk / f"{spk}_{i + 1:03d}_mic1.flac", x, 48000)
        _save(root / "wav48_silence_trimmed" / spk / f"{spk}_{i + 1:03d}_mic2.flac", x, 48000)  # second mic: not used
    (root / "speaker-info.txt").write_text("ID AGE GENDER ACCENTS\np225 23 F English\np226 22 M English\n")
    return root


def make_ljspeech(root: Path, clips: list[torch.Tensor]) -> Path:
    lines = []
    for i, x in enumerate(clips[:6]):
        uid = f"LJ001-{i + 1:04d}"
        _save(root / "wavs" / f"{uid}.wav", x, 22050)
        lines.append(f"{uid}|Printing, in the only sense {i}|Printing, in the only sense {i}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def make_librispeech(root: Path, clips: list[torch.Tensor]) -> Path:
    layout = [("train-clean-100", "19", "198"), ("train-clean-100", "26", "495"), ("dev-clean", "84", "121123")]
    for j, (part, spk, chap) in enumerate(layout):
        folder = root / part / spk / chap
        uids = [f"{spk}-{chap}-{k:04d}" for k in range(3 if part != "dev-clean" else 2)]
        for k, uid in enumerate(uids):
            _save(folder / f"{uid}.flac", clips[(3 * j + k) % len(clips)], 16000)
        (folder / f"{spk}-{chap}.trans.txt").write_text("".join(f"{u} SOME WORDS\n" for u in uids))
    return root


def make_speechcommands(root: Path, clips: list[torch.Tensor]) -> Path:
    hashes = ["0a7c2a8d", "0b09edd3", "0c40e715", "0ea0e2f4"]
    for i, x in enumerate(clips[:8]):
        word = ("yes", "no")[i % 2]
        x = torch.nn.functional.pad(x[:, :8000], (0, max(0, 8000 - x.shape[-1])))  # 1 s clips
        _save(root / word / f"{hashes[i // 2]}_nohash_{i % 2}.wav", x, 16000)
    _save(root / "_background_noise_" / "white_noise.wav", 0.1 * torch.randn(1, 8000), 16000)  # not a word
    (root / "testing_list.txt").write_text("yes/0ea0e2f4_nohash_0.wav\nno/0ea0e2f4_nohash_1.wav\n")
    (root / "validation_list.txt").write_text("")
    return root


def make_custom(root: Path, clips: list[torch.Tensor]) -> Path:
    for i, x in enumerate(clips[:8]):
        _save(root / ("birds", "voices")[i % 2] / f"take{i}.{('wav', 'flac')[i % 2]}", x, (8000, 16000)[i % 2])
    return root


LAYOUTS = {"vctk": ("VCTK", make_vctk), "ljspeech": ("LJSPEECH", make_ljspeech),
           "librispeech": ("LIBRISPEECH", make_librispeech), "speechcommands": ("SPEECHCOMMANDS", make_speechcommands),
           "custom": ("CUSTOM", make_custom)}


def check_outputs(exp: Path, labels: bool) -> dict:
    for s in STAGES:
        assert (exp / ".done" / s).is_file(), s
    data = json.loads((exp / "data" / "info.json").read_text())
    heldout = (exp / "data" / "heldout.txt").read_text().split()
    train = (exp / "data" / "train.txt").read_text().split()
    assert heldout and train and not set(heldout) & set(train)
    assert (exp / "vqvae" / "best").is_dir() or (exp / "vqvae" / "last").is_dir()
    report = json.loads((exp / "eval" / "report.json").read_text())
    assert len(report["files"]) == len(heldout)
    assert (exp / "eval" / "report.md").is_file() and (exp / "eval" / "rate_curve.png").is_file()
    tokens = sorted((exp / "tokens").rglob("*.vqa"))
    assert len(tokens) == len(train)
    if labels:
        assert len({t.relative_to(exp / "tokens").parts[0] for t in tokens}) == len(data["labels"]) >= 2
    assert (exp / "prior" / "last").is_dir()
    assert list((exp / "samples").glob("*.vqa")) and (list((exp / "samples").glob("*.wav"))
                                                       or list((exp / "samples").glob("*.npy")))
    return report


def test_asterisk_smoke_stages_and_idempotence(tmp_path):
    if not Path("/usr/share/asterisk/sounds/en_US_f_Allison").is_dir():
        pytest.skip("asterisk-core-sounds-*-wav not installed")
    exp = tmp_path / "exp"
    t0 = time.perf_counter()
    r = run_recipe("asterisk", exp, "--smoke")
    assert r.returncode == 0, r.stderr[-3000:]
    elapsed = time.perf_counter() - t0
    report = check_outputs(exp, labels=True)
    heldout = [ln for ln in (RECIPES / "asterisk/conf/heldout.txt").read_text().splitlines() if ln[:1] not in ("#", "")]
    assert [Path(f).name for f in report["files"]] == [Path(h).name for h in heldout[:4]]  # the listed prompts
    assert {"codec2-3200", "codec2-2400", "opus-6k"} <= set(report["systems"]) | set(report["skipped"])
    assert elapsed < 400
    # done stages are skipped ...
    again = run_recipe("asterisk", exp, "--smoke")
    assert again.returncode == 0 and again.stderr.count("done already") == 7
    # ... unless selected and forced; other stages stay untouched
    before = (exp / "vqvae" / "log.jsonl").stat().st_mtime_ns
    (exp / "eval" / "report.json").unlink()
    one = run_recipe("asterisk", exp, "--smoke", "--stage", "3", "--stop-stage", "3", "--force")
    assert one.returncode == 0 and "stage 3 (eval): start" in one.stderr and "stage 2" not in one.stderr
    assert (exp / "eval" / "report.json").is_file() and (exp / "vqvae" / "log.jsonl").stat().st_mtime_ns == before


def test_ucr_smoke(tmp_path):
    pytest.importorskip("aeon")
    exp = tmp_path / "exp"
    r = run_recipe("ucr", exp, "--smoke", UCR="GunPoint")
    assert r.returncode == 0, r.stderr[-3000:]
    report = check_outputs(exp, labels=True)
    assert report["codec"]["kind"] == "series" and report["metrics"] == ["si_snr", "nmse"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dataset_smoke(tmp_path, clips, name):
    var, make = LAYOUTS[name]
    corpus = make(tmp_path / "corpus", clips)
    exp = tmp_path / "exp"
    env = {var: str(corpus)}
    if name == "custom":
        env["LABELS"] = "true"
    r = run_recipe(name, exp, "--smoke", **env)
    assert r.returncode == 0, r.stderr[-3000:]
    check_outputs(exp, labels=name != "ljspeech")
    train = (exp / "data" / "train.txt").read_text()
    if name == "vctk":
        assert "_mic2" not in train and "_mic1.flac" in train
    if name == "librispeech":
        assert "dev-clean" not in train and all("dev-clean" in f for f in (exp / "data/heldout.txt").read_text().split())
    if name == "speechcommands":
        assert "_background_noise_" not in train and "0ea0e2f4" not in train


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_missing_corpus_fails_fast(tmp_path, name):
    var, _ = LAYOUTS[name]
    r = run_recipe(name, tmp_path / "exp", "--smoke", "--stop-stage", "1", **{var: str(tmp_path / "nowhere")})
    assert r.returncode != 0
    assert var in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "exp" / ".done" / "0.data").exists()


def test_wrong_layout_names_the_variable(tmp_path):
    (tmp_path / "vctk" / "wav48_silence_trimmed").mkdir(parents=True)  # right folder, no speakers in it
    r = run_recipe("vctk", tmp_path / "exp", "--smoke", "--stop-stage", "1", VCTK=str(tmp_path / "vctk"))
    assert r.returncode != 0 and "set VCTK" in r.stderr and "mic1" in r.stderr


def test_usage_errors(tmp_path):
    r = run_recipe("asterisk", tmp_path / "exp", "--bogus")
    assert r.returncode != 0 and "unknown option --bogus" in r.stderr
    r = run_recipe("asterisk", tmp_path / "exp", "--stage", "x")
    assert r.returncode != 0 and "integers" in r.stderr


def test_shellcheck_clean():
    import shutil

    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    scripts = sorted(str(p.relative_to(ROOT)) for p in RECIPES.glob("*/*.sh")) + \
        sorted(str(p.relative_to(ROOT)) for p in RECIPES.glob("common/*.sh"))
    r = subprocess.run(["shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def _speech8k_voices_installed() -> bool:
    sys.path.insert(0, str(RECIPES / "common"))
    from voices import voices

    installed = {v.id for v in voices()}
    table = [ln.split("\t") for ln in (RECIPES / "speech8k/conf/voices.tsv").read_text().splitlines()
             if ln and not ln.startswith(("#", "voice\t"))]
    return all(row[0] in installed for row in table if row[1] != "drop")


def test_speech8k_smoke_keeps_unseen_voices_out_of_training(tmp_path):
    if not _speech8k_voices_installed():
        pytest.skip("speech8k's voice packages are not all installed (scripts/setup.sh installs them)")
    exp = tmp_path / "exp"
    r = run_recipe("speech8k", exp, "--smoke")
    assert r.returncode == 0, r.stderr[-3000:]
    data = exp / "data"
    table = [ln.split("\t") for ln in (RECIPES / "speech8k/conf/voices.tsv").read_text().splitlines()
             if ln and not ln.startswith(("#", "voice\t"))]
    unseen = {row[0] for row in table if row[1] == "eval"}
    train = (data / "train.txt").read_text().splitlines()
    assert train and not [p for p in train if Path(p).parent.name.split("+")[0] in unseen]
    folders = {Path(p).parent.name for p in train}
    assert folders >= {"asterisk-en_US_f_Allison+sp0.9", "asterisk-it_IT_m_Carlo+sp1.1",
                       "asterisk-en_US_f_Allison+pitch-300", "asterisk-en_US_f_Allison+pitch400"}
    assert not [f for f in folders if f.startswith("asterisk-it_IT_m_Carlo+pitch")]  # pitch copies: women only
    for sex in ("male", "female"):
        voices = {Path(p).parent.name for p in (data / f"eval_unseen_{sex}.txt").read_text().splitlines()}
        assert len(voices) >= 3 and voices <= unseen
    heldout = (data / "heldout_asterisk.txt").read_text().splitlines()
    assert len(heldout) == 24 and not set(heldout) & set(train)
    snd = Path("/usr/share/asterisk/sounds")
    held = {(f"asterisk-{Path(h).relative_to(snd).parts[0]}", "__".join(Path(h).parts[-3:])) for h in heldout}
    assert not [p for p in train if (Path(p).parent.name.split("+")[0], Path(p).name) in held]
    for s in ("eval_unseen_male", "eval_unseen_female", "heldout_asterisk"):
        assert (exp / "eval" / s / "report.json").is_file()
    assert json.loads((exp / "vqvae" / "train.json").read_text())["task"]["augment"]["p_noise"] > 0
    cycle2 = json.loads((exp / "vqvae2" / "train.json").read_text())  # second cycle: from stage 2, voices balanced
    assert cycle2["train"]["balance"] == "folders" and cycle2["task"]["init"] == str(exp / "vqvae")
    cycle3 = json.loads((exp / "vqvae3" / "train.json").read_text())  # stage 4: from stage 3's last weights
    assert cycle3["task"]["init"] == str(exp / "vqvae2" / "last")
    cycle4 = json.loads((exp / "vqvae5" / "train.json").read_text())  # stage 5: from stage 4's, folders by size
    assert cycle4["task"]["init"] == str(exp / "vqvae3" / "last") and cycle4["train"]["balance_power"] == 0.5
    exported = json.loads((exp / "model" / "config.json").read_text())["state"]["meta"]  # stage 7: stage 5's last
    assert exported["step"] == cycle4["train"]["steps"] and exported["train"]["balance_power"] == 0.5
    assert "GNU General Public License, version 3" in (exp / "model" / "MODEL_CARD.md").read_text()  # the card goes along
    # a listed voice that is not installed: one line naming its folder and package, exit 2
    bad = tmp_path / "voices.tsv"
    bad.write_text("voice\trole\tsex\tf0_hz\tactive_s\tpackage\nklettres-xx\ttrain\tm\t100\t10\tklettres-data\n")
    r = run_recipe("speech8k", tmp_path / "exp2", "--smoke", VOICES=str(bad))
    assert r.returncode != 0 and "klettres-xx is not installed: no /usr/share/klettres/xx (apt-get install klettres-data)" in r.stderr
