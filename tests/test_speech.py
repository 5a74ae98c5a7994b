"""The speaker: espeak-ng renders each language ahead of time; aplay plays; a missing speaker is TROUBLE.

Needs espeak-ng, sox and alsa-utils (``.ci/apt-packages``). ALSA's ``null`` device
plays without a sound card; a fake ``aplay`` script stands in where a test needs
to see what was played or to hold playback open.
"""

import re
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from node import config as config_mod
from node.protocol.alerts import State
from node.daemon.node import Node
from node.hardware.devices import Hardware
from node.sim import provision
from node.hardware.speech import CHIMES, SENTENCES, Speaker, from_config, wav_seconds

PLACES = {101: "Building 1", 103: "Building 3"}


def sox_stat(path: Path) -> dict[str, float]:
    """sox's own measurement of a WAV file: length in seconds and RMS amplitude (0..1)."""
    out = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True).stderr
    values = dict(re.findall(r"^(Length \(seconds\)|RMS\s+amplitude):\s+([0-9.]+)", out, re.M))
    return {"seconds": float(values["Length (seconds)"]), "rms": float(values["RMS     amplitude"])}


def fake_aplay(tmp_path: Path, body: str) -> str:
    """A stand-in for aplay: a shell script with ``body``; "$4" is the file it is asked to play."""
    script = tmp_path / "aplay"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def speaker(tmp_path):
    made = []

    def make(languages=("en", "es", "ko"), device="null", **kw):
        s = Speaker(device, tmp_path / "cache", list(languages), places=PLACES, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_the_tools_are_installed():
    for tool in ("espeak-ng", "sox", "aplay"):
        assert shutil.which(tool), f"{tool} missing: add it to .ci/apt-packages and run bash .ci/setup"


@pytest.mark.parametrize("language", ["en", "es", "ko"])
@pytest.mark.parametrize("state", [State.REPORTED, State.CONFIRMED])
def test_each_language_renders_a_non_silent_announcement_of_plausible_length(speaker, language, state):
    s = speaker([language])
    s.prepare()
    assert s.trouble == ""
    clips = s.clips(state, 103)
    assert len(clips) == 2  # the chime, then the sentence
    sentence = clips[1]
    with wave.open(str(sentence)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
    stat = sox_stat(sentence)
    words = len(SENTENCES[language][state].split())
    assert 1.5 < stat["seconds"] < 2.0 * words, stat  # a sentence, not a click and not a runaway
    assert stat["rms"] > 0.01, stat                    # not silence
    assert stat["seconds"] == pytest.approx(wav_seconds(sentence), abs=0.01)


def test_each_state_has_its_own_non_silent_chime(speaker):
    s = speaker(["en"])
    s.prepare()
    chimes = {}
    for state, test in [(State.REPORTED, False), (State.CONFIRMED, False), (State.ALL_CLEAR, False),
                        (State.CANCELLED, False), (State.REPORTED, True)]:
        clips = s.clips(state, 101, test=test)
        chimes[(state, test)] = clips[0].read_bytes()
        assert sox_stat(clips[0])["rms"] > 0.01
        if test or state in (State.ALL_CLEAR, State.CANCELLED):
            assert len(clips) == 1  # a chime only: nothing to announce
    assert len(set(chimes.values())) == len(CHIMES)


def test_rendering_happens_ahead_of_time_and_only_for_what_changed(speaker, tmp_path):
    s = speaker(["en", "es"])
    s.prepare()
    files = {p.name: p.stat().st_mtime_ns for p in s.cache_dir.glob("*.wav")}
    assert len([n for n in files if n.startswith("say-")]) == 2 * 2 * len(PLACES)
    s.prepare()  # nothing changed: nothing rendered again
    assert {p.name: p.stat().st_mtime_ns for p in s.cache_dir.glob("*.wav")} == files
    renamed = Speaker("null", s.cache_dir, ["en", "es"], places={101: "Building 1", 103: "Corner Store"})
    renamed.prepare()
    now = {p.name: p.stat().st_mtime_ns for p in renamed.cache_dir.glob("*.wav")}
    kept = {n for n in now if n in files and now[n] == files[n]}
    assert all("-101-" in n for n in kept if n.startswith("say-"))    # Building 1 untouched
    assert len(now) == len(files)                                       # the old Building 3 files are gone
    assert not any("-103-" in n for n in kept)


def test_nothing_is_rendered_at_alert_time(speaker):
    s = speaker(["en"])
    assert s.clips(State.CONFIRMED, 101) == []  # before prepare(): silence, not a slow espeak call
    s.announce(State.CONFIRMED, 101)
    assert not s.playing and not s.cache_dir.exists()


def test_tagalog_falls_back_to_the_next_language_and_says_so(speaker):
    s = speaker(["tl", "en"], recordings_dir=Path("/nonexistent/recordings"))
    s.prepare()
    sources = {src.language: src for src in s.sources()}
    assert sources["en"].how == "espeak-ng"
    assert sources["tl"].how == "none" and "falls back to en" in sources["tl"].detail
    clips = s.clips(State.CONFIRMED, 101)
    assert len(clips) == 2 and "-en-" in clips[1].name


def test_tagalog_plays_recordings_and_a_place_recording_wins(speaker, tmp_path):
    folder = tmp_path / "recordings" / "tl"
    folder.mkdir(parents=True)
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(folder / "confirmed.wav"), "Babala"], check=True)
    shutil.copy(folder / "confirmed.wav", folder / "confirmed-103.wav")
    s = speaker(["tl", "en"], recordings_dir=tmp_path / "recordings")
    s.prepare()
    assert {src.language: src.how for src in s.sources()} == {"tl": "recordings", "en": "espeak-ng"}
    assert s.clips(State.CONFIRMED, 101)[1] == folder / "confirmed.wav"
    assert s.clips(State.CONFIRMED, 103)[1] == folder / "confirmed-103.wav"
    assert "-en-" in s.clips(State.REPORTED, 101)[1].name  # no reported recording: falls back to en


def test_announcements_play_chime_then_each_language_in_order(speaker, tmp_path):
    log = tmp_path / "played.log"
    s = speaker(["es", "en"], aplay=fake_aplay(tmp_path, f'echo "$4" >> {log}'))
    s.prepare()
    s.announce(State.REPORTED, 103)
    assert s.join(10)
    played = log.read_text().split()
    assert [Path(p).name.split("-")[0:2] for p in played] == [["chime", "reported"], ["say", "es"], ["say", "en"]]
    assert s.trouble == ""


def test_silence_stops_the_announcement_at_once(speaker, tmp_path):
    s = speaker(["en"], aplay=fake_aplay(tmp_path, "exec sleep 30"))
    s.prepare()
    s.announce(State.CONFIRMED, 101)
    assert s.playing
    s.silence()
    assert not s.playing and s.trouble == ""


def test_the_null_device_plays_and_a_missing_device_is_trouble(speaker):
    good = speaker(["en"])
    good.prepare()
    assert good.probe() and good.trouble == ""
    missing = speaker(["en"], device="hw:CARD=NoSuchCard")
    missing.prepare()
    assert not missing.probe()
    assert "NoSuchCard" in missing.trouble and "does not play" in missing.trouble
    missing.announce(State.CONFIRMED, 101)  # never raises
    assert missing.join(10) and missing.trouble


def test_missing_aplay_or_espeak_is_trouble_not_a_crash(speaker):
    s = speaker(["en", "es"], espeak="/nonexistent/espeak-ng", aplay="/nonexistent/aplay")
    s.prepare()
    assert "espeak-ng is not installed" in s.trouble
    assert [src.how for src in s.sources()] == ["none", "none"]
    assert "chimes only" in s.trouble
    clips = s.clips(State.CONFIRMED, 101)
    assert len(clips) == 1  # the chime still plays
    assert not s.probe() and "cannot run /nonexistent/aplay" in s.trouble


def test_from_config_builds_no_speaker_without_a_device(tmp_path):
    assert from_config(config_mod.from_mapping({"node.state_dir": str(tmp_path)}), PLACES) is None
    cfg = config_mod.from_mapping({"node.state_dir": str(tmp_path), "speaker.device": "null",
                                   "node.languages": "ko,tl"})
    s = from_config(cfg, PLACES)
    assert s.languages == ["ko", "tl"] and s.cache_dir == tmp_path / "speech"


def test_the_speaker_announces_reports_elsewhere_but_not_at_the_origin(tmp_path):
    log = tmp_path / "played.log"
    s = Speaker("null", tmp_path / "cache", ["en"], places=PLACES, aplay=fake_aplay(tmp_path, f'echo "$4" >> {log}'))
    cfg = config_mod.from_mapping({"hardware.hold_time": 0.05})
    hw = Hardware(cfg, on_hold=lambda: None, speaker=s, pin_factory=MockFactory())
    def played():
        return [p for p in log.read_text().split() if not p.endswith("silence.wav")]  # not the start-up probe

    try:
        assert s.ready.wait(30) and s.trouble == ""
        hw.sound(State.REPORTED, at_origin=True, test=False, location=101)   # the captain's own report: chirps
        assert s.join(10) and played() == []
        hw.sound(State.REPORTED, at_origin=False, test=False, location=103)  # elsewhere: chime and words
        assert s.join(10)
        assert len(played()) == 2
        hw.sound(State.CONFIRMED, at_origin=False, test=False, location=103)
        assert hw.sounding
        hw.silence()  # a silence press stops the siren and the speaker
        assert not hw.sounding
    finally:
        hw.close()


def test_with_the_speaker_absent_the_node_raises_trouble_and_keeps_running(tmp_path):
    files = provision(tmp_path, 2, hold_time=0.05, overrides={"speaker.device": "hw:CARD=NoSuchCard"})
    factory = MockFactory()
    node = Node(files.configs[0], pin_factory=factory).start()
    try:
        assert node.hardware.speaker.ready.wait(30)
        node.tick()
        assert "NoSuchCard" in node.store.troubles()["speaker"]
        assert node.hardware.light.mode in ("trouble", "alarm")
        alert = node.report()
        assert node.store.get_alert(alert.id).state is State.REPORTED
        assert any(state for _, state in factory.pin(27).states), "the siren must sound without a speaker"
        node.tick()  # and the node goes on
        assert node.store.pending()
    finally:
        node.stop()


def test_a_working_speaker_clears_its_trouble(tmp_path):
    files = provision(tmp_path, 2, hold_time=0.05, overrides={"speaker.device": "null", "node.languages": "en"})
    node = Node(files.configs[0], pin_factory=MockFactory()).start()
    try:
        assert node.hardware.speaker.ready.wait(30)
        node.tick()
        assert "speaker" not in node.store.troubles()
        rendered = list((files.configs[0].state_dir / "speech").glob("say-en-*.wav"))
        assert len(rendered) == 2 * 2  # REPORTED and CONFIRMED for both places on the roster
    finally:
        node.stop()
