"""The voices of the speech-8k recipe: every Debian-packaged recording it may use, one entry per voice folder.

A voice is read from its own folder, never through the ``<lang>`` alternatives links that
``/usr/share/asterisk/sounds/{en,es,fr,it}`` may be (they point at whichever voice package was installed last, and
``asterisk-prompt-es-co`` / ``-fr-armelle`` replace them with real folders of ``.gsm`` prompts).

``voices()`` lists the voices whose package is installed; ``files(voice)`` lists a voice's recordings after the drops the
recipe makes (silence folders, beeps and tones, non-speech and creature sounds). Standard library only.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/")
AUDIO = (".wav", ".gsm", ".ogg", ".opus", ".flac")
# Asterisk prompts that are not speech (tones, beeps, music) or are silence.
NON_SPEECH = re.compile(r"(^|/)(silence|beep|beeperr|tone|.*-tone|dial|ring|busy|congestion|ding|click|"
                        r"music.*|.*moh.*|dtmf.*|.*\d+hz.*)(\.[a-z0-9]+)?$", re.I)


@dataclass(frozen=True)
class Voice:
    """One speaker's recordings: ``folders`` (below ``/``) hold them, ``pattern`` filters the file names."""

    id: str
    package: str
    folders: tuple[str, ...]
    language: str
    licence: str
    material: str
    pattern: str = r".*"
    exclude: str = r"$^"

    @functools.cache  # noqa: B019 - a frozen dataclass; voices() and the corpus builder both ask
    def files(self, root: Path = ROOT) -> list[Path]:
        """The voice's recordings (sorted), without silences, tones and other non-speech."""
        keep, drop = re.compile(self.pattern), re.compile(self.exclude)
        out = []
        for folder in self.folders:
            base = root / folder
            if not base.is_dir() or base.is_symlink():
                continue
            for p in sorted(base.rglob("*")):
                rel = p.relative_to(base).as_posix()
                if (p.suffix.lower() in AUDIO and p.is_file() and keep.fullmatch(p.name) and not drop.search(rel)
                        and not NON_SPEECH.search(rel) and "silence/" not in rel + "/"):
                    out.append(p)
        return out

    def installed(self, root: Path = ROOT) -> bool:
        return any((root / f).is_dir() and not (root / f).is_symlink() for f in self.folders)


SND = "usr/share/asterisk/sounds"
CC_BY_SA_3 = "CC-BY-SA-3.0"
GPL2P = "GPL-2.0-or-later"


# The voices of asterisk-core-sounds-<lang>-wav: (folder below sounds/, language); the asterisk recipe's corpus.
ASTERISK_CORE = (("en_US_f_Allison", "en"), ("es_MX_f_Allison", "es"), ("fr_CA_f_June", "fr"), ("it_IT_m_Carlo", "it"))


def core_package(folder: str) -> str:
    """The Debian package of an :data:`ASTERISK_CORE` voice folder."""
    return f"asterisk-core-sounds-{dict(ASTERISK_CORE)[folder]}-wav"


def _asterisk() -> list[Voice]:
    out = [Voice(f"asterisk-{v}", core_package(v), (f"{SND}/{v}",), lang, CC_BY_SA_3, "phone prompts", r".*\.wav")
           for v, lang in ASTERISK_CORE]
    out.append(Voice("asterisk-it_IT_f_Menardi", "asterisk-prompt-it-menardi-wav", (f"{SND}/it_IT_f_Menardi",), "it",
                     CC_BY_SA_3, "phone prompts", r".*\.wav"))
    out.append(Voice("asterisk-fr_armelle", "asterisk-prompt-fr-armelle",
                     (f"{SND}/fr", f"{SND}/digits/fr", f"{SND}/letters/fr", f"{SND}/phonetic/fr", f"{SND}/dictate/fr"),
                     "fr", "BSD-like (Armelle Desjardins)", "phone prompts, GSM-coded", r".*\.gsm"))
    out.append(Voice("asterisk-es_co", "asterisk-prompt-es-co", (f"{SND}/es", f"{SND}/digits/es"), "es",
                     "GPL-2.0", "phone prompts, GSM-coded", r".*\.gsm"))
    return out


def _klettres(root: Path) -> list[Voice]:
    base = root / "usr/share/klettres"
    langs = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return [Voice(f"klettres-{lang}", "klettres-data", (f"usr/share/klettres/{lang}",), lang, GPL2P,
                  "letters and syllables", r".*\.(ogg|wav|opus)") for lang in langs]


def _ktuberling(root: Path) -> list[Voice]:
    base = root / "usr/share/ktuberling/sounds"
    langs = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return [Voice(f"ktuberling-{lang}", "ktuberling-data", (f"usr/share/ktuberling/sounds/{lang}",), lang.split("@")[0],
                  GPL2P, "isolated words", r".*\.(ogg|wav|opus)") for lang in langs]


FILLETS = "usr/share/games/fillets-ng/sound"


def _fillets(root: Path) -> list[Voice]:
    """The two main fish voices per language (``<level>/<lang>/<line>-m-*`` small, ``-v-*`` big fish)."""
    base = root / FILLETS
    levels = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    out = []
    for lang in ("cs", "nl"):
        folders = tuple(f"{FILLETS}/{lv}/{lang}" for lv in levels) + tuple(
            f"{FILLETS}/share/{j}/{lang}" for j in ("borejokes", "blackjokes"))
        for who, fish in (("m", "small"), ("v", "big")):
            out.append(Voice(f"fillets-{lang}-{fish}", f"fillets-ng-data-{lang}", folders, lang, "GPL-2.0-or-later",
                             "acted dialogue", rf"[^-]+-{who}-.*\.ogg"))
    return out


def voices(root: Path = ROOT) -> list[Voice]:
    """Every known voice whose folder is installed under ``root`` and holds recordings."""
    return [v for v in _asterisk() + _klettres(root) + _ktuberling(root) + _fillets(root)
            if v.installed(root) and v.files(root)]


def where(voice_id: str) -> str:
    """Where a voice is read from and which Debian package installs it, for error messages."""
    fixed = {v.id: v for v in _asterisk()}
    if voice_id in fixed:
        v = fixed[voice_id]
        return f"/{v.folders[0]} (apt-get install {v.package})"
    kind, _, lang = voice_id.partition("-")
    places = {"klettres": ("usr/share/klettres/{}", "klettres-data"),
              "ktuberling": ("usr/share/ktuberling/sounds/{}", "ktuberling-data"),
              "fillets": (FILLETS + "/*/{}", "fillets-ng-data-{}")}
    if kind not in places:
        return "(unknown voice)"
    folder, package = places[kind]
    lang = lang.split("-")[0]
    return f"/{folder.format(lang)} (apt-get install {package.format(lang)})"
