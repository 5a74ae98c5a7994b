"""The incident page's evidence form: sealed as it streams in, never buffered, never left half-written."""

from __future__ import annotations

import io
import re

import pyrage
import pytest

from node.protocol.alerts import State
from web import evidence as web_evidence
from websupport import app_for, make_block, until, everywhere

MARKER = b"CANARY-7f3a-what-the-agents-did-"


@pytest.fixture(scope="module")
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = make_block(tmp_path_factory.mktemp("evidence"))
    raid = b.nodes[1].report()
    until(b, lambda: everywhere(b, raid.id, State.REPORTED))
    b.raid = raid.id
    yield b
    b.stop()


@pytest.fixture
def app(block, identity):
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), EVIDENCE_MAX_ITEM=3_000_000)
    return app


def folder(block, i=2):
    return block.files.configs[i - 1].evidence_dir


def items(block, i=2):
    return sorted(p.name for p in folder(block, i).iterdir())


def token(client, alert_id):
    html = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def send(client, alert_id, *, files=(), statement="", csrf=None, lang="en"):
    form = {"csrf_token": csrf if csrf is not None else token(client, alert_id)}
    form["file"] = [(io.BytesIO(body), name, kind) for body, name, kind in files] or [(io.BytesIO(b""), "", "application/octet-stream")]
    form["statement"] = statement
    return client.post(f"/alerts/{alert_id}/evidence?lang={lang}", data=form, content_type="multipart/form-data")


def test_the_page_offers_the_form_with_its_guidance(app, block):
    client = app.test_client()
    html = client.get(f"/alerts/{block.raid}").get_data(as_text=True)
    assert 'accept="image/*,video/*,audio/*" capture' in html and 'enctype="multipart/form-data"' in html
    assert "not your neighbors' faces" in html and "cannot open it" in html
    assert f'href="/alerts/{block.raid}"' in client.get("/").get_data(as_text=True)


def test_a_photo_and_a_statement_are_sealed_with_their_type_inside(app, block, identity):
    before = set(items(block))
    photo = b"\xff\xd8\xff" + b"jpeg" * 5000
    response = send(app.test_client(), block.raid, files=[(photo, "IMG_0042.jpg", "image/jpeg")],
                    statement="Two agents at the door of 12 Elm.")
    assert response.status_code == 303 and "sent=2" in response.headers["Location"]
    new = sorted(set(items(block)) - before)
    assert len(new) == 4 and all(n.endswith(".age") for n in new)
    opened = {n: pyrage.decrypt((folder(block) / n).read_bytes(), [identity]) for n in new}
    assert photo in opened.values() and b"Two agents at the door of 12 Elm." in opened.values()
    metas = [v for n, v in opened.items() if n.endswith(".meta.age")]
    assert any(b'"content_type": "image/jpeg"' in m for m in metas)
    assert all(b"IMG_0042" not in v for v in opened.values())  # the phone's file name is kept nowhere


def test_a_form_without_its_token_reads_no_file(app, block):
    before = items(block)
    response = send(app.test_client(), block.raid, files=[(b"x" * 1000, "a.jpg", "image/jpeg")], csrf="forged")
    assert response.status_code == 403 and items(block) == before


def test_a_file_over_the_cap_is_refused_in_the_neighbors_language_and_leaves_nothing(app, block):
    before = items(block)
    client = app.test_client()
    big = b"v" * 3_200_000
    response = send(client, block.raid, files=[(big, "clip.mp4", "video/mp4")], lang="es")
    assert response.status_code == 413
    assert "3 MB" in response.get_data(as_text=True) and "Envía" in response.get_data(as_text=True)
    assert items(block) == before


def test_the_upload_is_read_in_small_pieces(app, block, identity):
    """Memory stays flat: the body is read from the stream READ_SIZE bytes at a time, however large."""
    seen = []
    original = web_evidence.Parts.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self)
    app.config["EVIDENCE_MAX_ITEM"] = 20_000_000
    app.config["MAX_FORM_BODY"] = 32_000_000  # the page's own reading, past the server's in-memory limit
    web_evidence.Parts.__init__ = spy
    try:
        body = b"w" * 16_000_000
        response = send(app.test_client(), block.raid, files=[(body, "v.mp4", "video/mp4")])
    finally:
        web_evidence.Parts.__init__ = original
    assert response.status_code == 303
    assert seen and 0 < seen[0].largest_read <= web_evidence.READ_SIZE


def test_uploads_are_limited_per_address(block, identity):
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), UPLOAD_LIMIT=(1, 600.0))
    client = app.test_client()
    assert send(client, block.raid, statement="first").status_code == 303
    response = send(client, block.raid, statement="second")
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_without_recipients_the_page_says_so_and_takes_nothing(block):
    app = app_for(block, 2, EVIDENCE_RECIPIENTS="")
    client = app.test_client()
    assert "have not set their key" in client.get(f"/alerts/{block.raid}").get_data(as_text=True)
    before = items(block)
    assert send(client, block.raid, statement="hello", csrf="unused").status_code == 409 and items(block) == before
