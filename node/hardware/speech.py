"""The speaker: a chime per state and a spoken sentence per language. Never imports gpiozero.

Nothing is rendered at alert time. ``Speaker.prepare()`` writes every chime, and
every sentence (REPORTED and CONFIRMED, for each place on the roster, in each of
``node.languages``), into a cache of WAV files under ``<state_dir>/speech``. A
file's name carries a hash of its voice and words, so when place names or
languages change only what changed is rendered, and stale files are removed.
The node does this in a background thread at start. Speech comes from espeak-ng,
offline; playback is ALSA's ``aplay -D <speaker.device>``.

espeak-ng speaks English, Spanish and Korean but has no Tagalog voice. For a
language without a voice the speaker plays recordings, for example made by a
neighbor, from ``speaker.recordings_dir``, as 16-bit PCM WAV files::

    <recordings_dir>/<lang>/reported.wav               any place
    <recordings_dir>/<lang>/confirmed.wav
    <recordings_dir>/<lang>/reported-<location>.wav    one place (wins over the generic file)
    <recordings_dir>/<lang>/confirmed-<location>.wav

``SENTENCES`` gives the words to record (``%(place)s`` is the place's name). A
language with neither a voice nor a recording falls back to the next configured
language: its turn is skipped, and ``silbato hardware test`` says so.

A missing speaker, aplay or espeak-ng is a TROUBLE line (``Speaker.trouble``),
never an exception; the siren does not depend on any of it.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from node import catalog
from node.catalog import N_
from node.hardware.player import Player
from node.protocol.alerts import State

log = logging.getLogger(__name__)

RATE = 22050          # Hz, the sample rate of chimes (espeak-ng writes 22050 Hz too)
SPEED = 140           # espeak-ng words per minute: slower than its default 175, for a hallway
SPOKEN = (State.REPORTED, State.CONFIRMED)

# The announcement of each state, in English; node/translations has the other languages.
# %(place)s is the place's name from the roster.
WORDS = {
    State.REPORTED: N_("Alert: immigration agents reported at %(place)s. Do not open the door."),
    State.CONFIRMED: N_("Confirmed alert: immigration agents at %(place)s. Do not open the door. Stay inside."),
}
# The same, per language (the words to record for a language espeak-ng cannot speak).
SENTENCES: dict[str, dict[State, str]] = {
    lang: {state: catalog.translations(lang).gettext(words) for state, words in WORDS.items()}
    for lang in catalog.LANGUAGES}


def sentence(language: str, state: State, place: str) -> str:
    """The announcement of ``state`` at ``place`` in ``language``."""
    return SENTENCES[language][state] % {"place": place}


# The espeak-ng voice for each language; a language whose voice espeak-ng lacks uses recordings.
VOICES = {"en": "en-us", "es": "es-419", "ko": "ko", "tl": "tl"}

# Each state's chime: (Hz, seconds) notes; 0 Hz is a rest.
CHIMES: dict[str, tuple[tuple[float, float], ...]] = {
    "reported": ((659.3, 0.35), (523.3, 0.6)),                                   # ding-dong
    "confirmed": ((880.0, 0.2), (0, 0.05), (880.0, 0.2), (0, 0.05), (880.0, 0.45)),  # three strokes
    "all_clear": ((523.3, 0.25), (784.0, 0.5)),                                  # rising
    "cancelled": ((784.0, 0.25), (523.3, 0.5)),                                  # falling
    "test": ((1046.5, 0.15),),
}


def chime_word(state: State, *, test: bool) -> str:
    """The chime for a state; TEST alerts have their own."""
    return "test" if test else state.word


def write_tones(path: Path, notes: Sequence[tuple[float, float]], *, volume: float = 0.5) -> None:
    """Write ``notes`` ((Hz, seconds), 0 Hz = rest) as a mono 16-bit WAV, each note struck like a bell."""
    samples = array.array("h")
    for freq, seconds in notes:
        n = int(RATE * seconds)
        for i in range(n):
            t = i / RATE
            envelope = min(1.0, t / 0.01) * (1.0 - i / n) ** 2 if freq else 0.0  # 10 ms attack, no click
            samples.append(int(32767 * volume * envelope * math.sin(2 * math.pi * freq * t)))
    _write_wav(path, samples)


def _write_wav(path: Path, samples: array.array) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    os.replace(tmp, path)


def wav_seconds(path: Path) -> float:
    """The length of a WAV file in seconds (0 if it cannot be read)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (OSError, wave.Error, EOFError):
        return 0.0


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LanguageSource:
    """How one language is spoken: ``espeak-ng``, ``recordings`` or ``none`` (falls back)."""

    language: str
    how: str
    detail: str


class Speaker(Player):
    """Chimes and announcements on ALSA device ``device``. Call ``start()`` once, ``close()`` at the end.

    ``places`` maps location codes to place names (from the roster). ``espeak`` and
    ``aplay`` name the programs; tests pass others.
    """

    def __init__(self, device: str, cache_dir: Path, languages: Sequence[str], *, places: Mapping[int, str],
                 recordings_dir: Path | None = None, espeak: str = "espeak-ng", aplay: str = "aplay"):
        self.device = device
        self.cache_dir = Path(cache_dir)
        self.languages = list(languages)
        self.places = dict(places)
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        self.espeak = espeak
        self.aplay = aplay
        self.ready = threading.Event()      # set when prepare() and the device probe are done
        self._troubles: dict[str, str] = {}  # part ("espeak", "device") -> sentence
        self._voices: dict[str, str | None] = {}
        self._closing = threading.Event()
        self._lock = threading.Lock()       # guards the player thread
        self._proc_lock = threading.Lock()  # guards the running aplay process
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._preparer: threading.Thread | None = None

    # -- trouble ----------------------------------------------------------------------------

    @property
    def trouble(self) -> str:
        """What is wrong with the speaker, as one sentence; empty when all is well."""
        return "; ".join(list(self._troubles.values()))  # list() copies atomically; other threads write

    def _set_trouble(self, part: str, message: str) -> None:
        if self._troubles.get(part) != message:
            log.warning("speaker: %s", message)
        self._troubles[part] = message

    def _clear_trouble(self, part: str) -> None:
        self._troubles.pop(part, None)

    # -- rendering (ahead of time) ------------------------------------------------------------

    def start(self) -> None:
        """Render what is missing and probe the device, in a background thread; sets ``ready``."""
        def run() -> None:
            try:
                self.prepare()
                if not self._closing.is_set():
                    self.probe()
            except Exception as exc:  # a rendering bug must not take the node down
                log.exception("speaker: preparing announcements failed")
                self._set_trouble("prepare", f"preparing announcements failed: {exc}")
            finally:
                self.ready.set()
        self._preparer = threading.Thread(target=run, name="speaker-prepare", daemon=True)
        self._preparer.start()

    def voice(self, language: str) -> str | None:
        """The espeak-ng voice for ``language``, or None if espeak-ng (or that voice) is missing."""
        if language not in self._voices:
            voice = VOICES.get(language, language)
            if shutil.which(self.espeak) is None:
                self._set_trouble("espeak", f"{self.espeak} is not installed, so announcements are chimes only "
                                            "(apt-get install espeak-ng)")
                return None
            self._clear_trouble("espeak")
            try:
                probe = subprocess.run([self.espeak, "-v", voice, "-q", "x"], capture_output=True, timeout=30)
                self._voices[language] = voice if probe.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("speaker: %s failed: %s", self.espeak, exc)
                return None
        return self._voices[language]

    def sources(self) -> list[LanguageSource]:
        """How each configured language is spoken; a language with no source falls back to the next."""
        found = []
        for lang in self.languages:
            voice = self.voice(lang)
            folder = self.recordings_dir / lang if self.recordings_dir else None
            if voice:
                found.append(LanguageSource(lang, "espeak-ng", f"espeak-ng voice {voice}"))
            elif folder is not None and any(folder.glob("*.wav")):
                found.append(LanguageSource(lang, "recordings", f"recordings in {folder}"))
            else:
                why = (f"{self.espeak} is not installed" if shutil.which(self.espeak) is None
                       else f"espeak-ng has no {lang} voice")
                where = f"{folder}/ has no recordings" if folder else "no recordings folder is set"
                found.append(LanguageSource(lang, "none", f"{why} and {where}"))
        usable = [s.language for s in found if s.how != "none"]
        result = []
        for i, source in enumerate(found):
            if source.how == "none":
                after = [lang for lang in self.languages[i + 1:] + self.languages[:i] if lang in usable]
                fallback = f"falls back to {after[0]}" if after else "nothing is spoken, only the chime"
                source = LanguageSource(source.language, "none", f"{source.detail}; {source.language} {fallback}")
            result.append(source)
        return result

    def prepare(self) -> None:
        """Render every chime and sentence this node may need that is not cached yet; remove stale files."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        keep = {"silence.wav"}
        silence = self.cache_dir / "silence.wav"
        if not silence.exists():
            _write_wav(silence, array.array("h", bytes(2 * RATE // 10)))  # 0.1 s, for the device probe
        for word, notes in CHIMES.items():
            path = self._chime_path(word)
            keep.add(path.name)
            if not path.exists():
                write_tones(path, notes)
        failures = []
        for lang in self.languages:
            voice = self.voice(lang)
            if voice is None:
                continue
            for state in SPOKEN:
                for location, place in sorted(self.places.items()):
                    if self._closing.is_set():
                        return
                    text = sentence(lang, state, place)
                    path = self._sentence_path(lang, voice, state, location, text)
                    keep.add(path.name)
                    if not path.exists() and not self.render(voice, text, path):
                        failures.append(f"{lang} {state.word} {location}")
        if failures:
            self._set_trouble("render", f"{self.espeak} could not render {len(failures)} announcements "
                                        f"(first: {failures[0]})")
        else:
            self._clear_trouble("render")
        for old in self.cache_dir.glob("*.wav"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def render(self, voice: str, text: str, path: Path) -> bool:
        """Speak ``text`` with espeak-ng into the WAV file ``path``. Returns False on failure (logged)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            # The words go on stdin, so a place name can never be read as an option.
            done = subprocess.run([self.espeak, "-v", voice, "-s", str(SPEED), "-b", "1", "-w", str(tmp), "--stdin"],
                                  input=text.encode(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("speaker: %s failed for %s: %s", self.espeak, path.name, exc)
            return False
        if done.returncode != 0 or wav_seconds(tmp) <= 0:
            log.warning("speaker: %s failed for %s: %s", self.espeak, path.name,
                        done.stderr.decode(errors="replace").strip())
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, path)
        return True

    def _chime_path(self, word: str) -> Path:
        return self.cache_dir / f"chime-{word}-{_digest(CHIMES[word], RATE)}.wav"

    def _sentence_path(self, lang: str, voice: str, state: State, location: int, text: str) -> Path:
        return self.cache_dir / f"say-{lang}-{state.word}-{location}-{_digest(voice, SPEED, text)}.wav"

    # -- what to play -------------------------------------------------------------------------

    def clips(self, state: State, location: int, *, test: bool = False) -> list[Path]:
        """The files for one announcement, as far as they are ready: the chime, then one sentence per language."""
        word = chime_word(state, test=test)
        out = []
        if word in CHIMES and (chime := self._chime_path(word)).exists():
            out.append(chime)
        if test or state not in SPOKEN:
            return out
        for lang in self.languages:
            clip = self._sentence(lang, state, location)
            if clip is not None:
                out.append(clip)
            else:  # falls back to the next configured language, which is next in this loop anyway
                log.debug("speaker: no %s announcement of %s at %s", lang, state.word, location)
        return out

    def _sentence(self, lang: str, state: State, location: int) -> Path | None:
        voice = self._voices.get(lang)
        if voice:
            place = self.places.get(location, f"location {location}")
            path = self._sentence_path(lang, voice, state, location, sentence(lang, state, place))
            return path if path.exists() else None  # never rendered at alert time
        if self.recordings_dir is not None:
            for name in (f"{state.word}-{location}.wav", f"{state.word}.wav"):
                if (path := self.recordings_dir / lang / name).is_file():
                    return path
        return None

    # -- playing ------------------------------------------------------------------------------

    def announce(self, state: State, location: int, *, test: bool = False) -> None:
        """Play the chime and the announcement for ``state`` at ``location`` in the background."""
        clips = self.clips(state, location, test=test)
        if clips:
            self.play(clips)

    def play(self, clips: Sequence[Path]) -> None:
        """Play ``clips`` one after another in the background, replacing whatever is playing."""
        with self._lock:
            self._halt()
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(target=self._play, args=(list(clips), stop), name="speaker", daemon=True)
            self._thread.start()

    def _play(self, clips: list[Path], stop: threading.Event) -> None:
        for clip in clips:
            ok, message = self.play_file(clip, stop)
            if stop.is_set():
                return
            if not ok:
                self._set_trouble("device", message)
                return
        self._clear_trouble("device")

    def play_file(self, path: Path, stop: threading.Event | None = None) -> tuple[bool, str]:
        """Play one file with aplay and wait for it. Returns (ok, what went wrong)."""
        try:
            proc = subprocess.Popen([self.aplay, "-q", "-D", self.device, str(path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            return False, f"cannot run {self.aplay}: {exc.strerror} (apt-get install alsa-utils)"
        with self._proc_lock:
            self._proc = proc
            if stop is not None and stop.is_set():
                proc.terminate()
        try:
            _, err = proc.communicate(timeout=wav_seconds(path) + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return False, f"aplay on {self.device} did not finish playing {path.name}"
        finally:
            with self._proc_lock:
                self._proc = None
        if proc.returncode == 0 or (stop is not None and stop.is_set()):
            return True, ""
        lines = err.decode(errors="replace").strip().splitlines()
        return False, f"speaker {self.device} does not play: {lines[-1] if lines else f'aplay exit {proc.returncode}'}"

    def probe(self) -> bool:
        """Play 0.1 s of silence on the device; a failure becomes the TROUBLE line."""
        ok, message = self.play_file(self.cache_dir / "silence.wav")
        if ok:
            self._clear_trouble("device")
        else:
            self._set_trouble("device", message)
        return ok

    @property
    def playing(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _halt(self) -> None:
        self._stop.set()
        with self._proc_lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self._closing.set()
        self.silence()
        if self._preparer is not None:
            self._preparer.join(timeout=10)


def from_config(config: Mapping[str, Any], places: Mapping[int, str], *,
                cache_dir: str | os.PathLike | None = None) -> Speaker | None:
    """The speaker ``config`` describes (``speaker.*``, ``node.languages``), or None without ``speaker.device``.

    Its cache is ``<node.state_dir>/speech`` unless ``cache_dir`` says otherwise.
    """
    if not config["speaker.device"]:
        return None
    languages = [lang.strip() for lang in config["node.languages"].split(",") if lang.strip()]
    recordings = config["speaker.recordings_dir"]
    return Speaker(config["speaker.device"], Path(cache_dir or Path(config["node.state_dir"]) / "speech"),
                   languages, places=places, recordings_dir=Path(recordings) if recordings else None)
