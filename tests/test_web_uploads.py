"""Evidence through the real server (waitress on loopback): no plaintext on disk, 413 before buffering,
pieces that resume after a dropped connection, idle uploads abandoned without a trace."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import tempfile
import uuid
from pathlib import Path

import pyrage
import pytest

from node.evidence import seal
from node.protocol.alerts import State
from web import uploads as web_uploads
from web.server import MAX_BODY, Server
from gammu import until as wall_until
from websupport import app_for, everywhere, make_block, until

MARKER = b"CANARY-5c1e-the-agents-at-the-door-"
WAIT = 30.0  # seconds; only ever reached when a test fails


@pytest.fixture(scope="module")
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """The process's temp dir, inside tmp_path. Python's TemporaryFile is unlinked at once (or has no
    name at all, O_TMPFILE), so a body spooled there would leave no trace to find: here each one is
    made a named file that stays, and the canary looks in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))

    def named(mode="w+b", *args, **kwargs):
        kwargs.pop("delete", None)
        kwargs["dir"] = str(folder)
        return tempfile.NamedTemporaryFile(mode, *args, delete=False, **kwargs)
    monkeypatch.setattr(tempfile, "TemporaryFile", named)
    return folder


@pytest.fixture
def block(tmp_path):
    b = make_block(tmp_path / "block", 2)
    raid = b.nodes[1].report()
    until(b, lambda: everywhere(b, raid.id, State.REPORTED))
    b.raid = raid.id
    yield b
    b.stop()


@pytest.fixture
def server(block, identity, spool):
    app = app_for(block, 2, TESTING=False, EVIDENCE_RECIPIENTS=str(identity.to_public()),
                  EVIDENCE_MAX_ITEM=30_000_000)
    s = Server(app, "127.0.0.1", 0, live_clients=1).start()
    yield s
    s.shutdown()


def evidence_folder(block) -> Path:
    return block.files.configs[1].evidence_dir


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


class Phone:
    """A browser's cookies and CSRF token over http.client."""

    def __init__(self, port: int, alert_id: str):
        self.port, self.alert_id, self.cookie = port, alert_id, ""
        html = self.call("GET", f"/alerts/{alert_id}")[2].decode()
        self.token = re.search(r'name="csrf_token" value="([^"]+)"', html)[1]

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        try:
            conn.request(method, path, body=body or None,
                         headers={"Cookie": self.cookie, "Accept": "application/json", **(headers or {})})
            response = conn.getresponse()
            cookie = response.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";")[0]
            return response.status, response.getheader("Location"), response.read()
        finally:
            conn.close()

    def form(self, fields: dict, files: dict) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        out = io.BytesIO()
        for name, value in fields.items():
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, (filename, kind, data) in files.items():
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        return out.getvalue(), f"multipart/form-data; boundary={boundary}"

    def send_form(self, data: bytes):
        body, kind = self.form({"csrf_token": self.token}, {"file": ("clip.mp4", "video/mp4", data)})
        return self.call("POST", f"/alerts/{self.alert_id}/evidence", body, {"Content-Type": kind})

    def start(self, size: int, kind: str = "video/mp4") -> dict:
        body = f"csrf_token={self.token}&size={size}&type={kind}".encode()
        status, _, answer = self.call("POST", f"/alerts/{self.alert_id}/uploads", body,
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 201, answer
        return json.loads(answer)

    def put(self, url: str, offset: int, data: bytes):
        status, _, answer = self.call("PUT", f"{url}?offset={offset}", data,
                                      {"X-CSRFToken": self.token, "Content-Type": "application/octet-stream"})
        return status, json.loads(answer)

    def cut_off(self, url: str, offset: int, data: bytes, sent: int) -> None:
        """A piece whose connection drops after ``sent`` of its bytes (the phone walked out of range)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        head = (f"PUT {url}?offset={offset} HTTP/1.1\r\nHost: node\r\nCookie: {self.cookie}\r\n"
                f"X-CSRFToken: {self.token}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        sock.sendall(head + data[:sent])
        sock.close()


def sealed_items(block) -> list[Path]:
    return sorted(p for p in evidence_folder(block).glob("*.age") if not p.name.endswith(".meta.age"))


def test_plaintext_never_touches_the_disk_in_one_request_or_in_pieces(server, block, identity, spool, tmp_path):
    phone = Phone(server.port, block.raid)
    small = MARKER * (6_000_000 // len(MARKER))  # over waitress's default 512 KB spool threshold
    status, location, _ = phone.send_form(small)
    assert status == 303 and "sent=1" in location

    large = MARKER * (5_500_000 // len(MARKER)) + b"tail"
    upload = phone.start(len(large))
    chunk, offset, cut = upload["chunk"], 0, False
    while offset < len(large):
        piece = large[offset:offset + chunk]
        if not cut and offset >= 0.6 * len(large) - chunk:
            phone.cut_off(upload["url"], offset, piece, len(piece) // 2)
            cut = True
            status, answer = 200, json.loads(phone.call("GET", upload["url"])[2])
            assert answer["offset"] == offset and not answer["done"]  # half a piece counts for nothing
            assert phone.put(upload["url"], offset + 7, piece)[0] == 409  # not where the node stands
            continue
        status, answer = phone.put(upload["url"], offset, piece)
        assert status == 200, answer
        offset = answer["offset"]
    assert cut and answer["done"] and "sent=1" in answer["sent"]

    opened = sorted(pyrage.decrypt(p.read_bytes(), [identity]) for p in sealed_items(block))
    assert opened == sorted([small, large])  # exactly the bytes sent, the resumed one included
    looked = files_under(tmp_path / "block", spool)
    assert any(p.name.endswith("-wal") for p in looked)  # the database's journal is among them
    assert [p for p in looked if MARKER in p.read_bytes()] == []
    assert not any(p.name.startswith(".part-") for p in looked)


def raw_request(port: int, head: bytes, body_pieces) -> tuple[bytes, bool]:
    """Send ``head`` and then as much of the body as the server reads; its answer, and whether all was sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sent_all = True
    try:
        sock.sendall(head)
        for piece in body_pieces:
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: it read no further
                sent_all = False
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return answer, sent_all


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_413_in_the_neighbors_language_and_nothing_is_written(
        server, block, spool, framing):
    phone = Phone(server.port, block.raid)
    before = files_under(evidence_folder(block), spool)
    head = (f"POST /alerts/{block.raid}/evidence?lang=es HTTP/1.1\r\nHost: node\r\nCookie: {phone.cookie}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n")
    filler = MARKER * (65536 // len(MARKER))
    if framing == "content-length":
        head += f"Content-Length: {MAX_BODY}\r\n\r\n"
        pieces = [filler]  # the answer comes on the headers alone
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        frame = f"{len(filler):x}\r\n".encode() + filler + b"\r\n"
        pieces = [frame] * (MAX_BODY // len(filler) + 8)
    answer, _ = raw_request(server.port, head.encode(), pieces)
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line
    assert "sin JavaScript" in rest.decode("utf-8", "replace") and b"Connection: close" in rest
    assert files_under(evidence_folder(block), spool) == before


def test_the_page_states_the_limit_without_javascript_and_loads_the_script(server, block):
    phone = Phone(server.port, block.raid)
    html = phone.call("GET", f"/alerts/{block.raid}?lang=es")[2].decode()
    assert "Sin JavaScript en tu navegador, hasta 8 MB" in html
    assert "evidence.js" in html and 'data-uploads="/alerts/' in html


def test_an_idle_upload_is_abandoned_and_leaves_no_file(block, identity):
    now = [1000.0]
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), UPLOAD_CLOCK=lambda: now[0],
                  WTF_CSRF_ENABLED=False)
    client = app.test_client()
    before = sorted(evidence_folder(block).iterdir())
    answer = client.post(f"/alerts/{block.raid}/uploads", data={"size": 3_000_000, "type": "video/mp4"})
    assert answer.status_code == 201
    url = answer.json["url"]
    assert client.put(f"{url}?offset=0", data=b"v" * 1_000_000).json["offset"] == 1_000_000
    registry = app.extensions["silbato.uploads"]
    upload = registry.get(answer.json["id"])
    assert upload.pipe is not None
    # the sealer (its own thread) begins its hidden file; under load, a moment after the piece was taken
    wall_until(lambda: any(p.name.startswith(".part-") for p in evidence_folder(block).iterdir()),
               timeout=WAIT, what="the sealer's hidden file")

    now[0] += web_uploads.IDLE - 1
    assert registry.sweep() == 0
    now[0] += 2
    assert registry.sweep() == 1
    assert upload.finished.wait(WAIT) and isinstance(upload.error, web_uploads.Aborted)
    assert sorted(evidence_folder(block).iterdir()) == before
    gone = client.get(url)
    assert gone.status_code == 404 and gone.json["restart"]


def test_the_sealer_takes_only_the_cpu_nothing_else_wants(block, identity):
    """The sealer thread runs at the idle scheduling policy: a captain's hold on the node never
    waits for a video being encrypted (benchmark P11), and the page's other threads keep theirs."""
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), WTF_CSRF_ENABLED=False)
    client = app.test_client()
    answer = client.post(f"/alerts/{block.raid}/uploads", data={"size": 3_000_000, "type": "video/mp4"})
    assert client.put(f"{answer.json['url']}?offset=0", data=b"v" * 1_000_000).status_code == 200
    upload = app.extensions["silbato.uploads"].get(answer.json["id"])
    # it lowers itself first thing, before the hidden file it begins
    wall_until(lambda: any(p.name.startswith(".part-") for p in evidence_folder(block).iterdir()),
               timeout=WAIT, what="the sealer's hidden file")
    assert os.sched_getscheduler(upload.thread.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE   # this thread (a request's) is untouched
    app.extensions["silbato.uploads"].abort(upload, "the test is over")
    assert upload.finished.wait(WAIT)


def test_a_piece_past_the_announced_size_ends_the_upload(block, identity):
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), WTF_CSRF_ENABLED=False)
    client = app.test_client()
    before = sorted(evidence_folder(block).iterdir())
    url = client.post(f"/alerts/{block.raid}/uploads", data={"size": 10}).json["url"]
    assert client.put(f"{url}?offset=0", data=b"x" * 11).status_code == 413
    assert client.get(url).status_code == 404
    assert sorted(evidence_folder(block).iterdir()) == before


def test_an_upload_larger_than_the_cap_is_refused_at_its_start(block, identity):
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), WTF_CSRF_ENABLED=False,
                  EVIDENCE_MAX_ITEM=3_000_000)
    answer = app.test_client().post(f"/alerts/{block.raid}/uploads?lang=ko", data={"size": 3_000_001})
    assert answer.status_code == 413 and "3 MB" in answer.json["error"] and "조직자" in answer.json["error"]


def _token(client, alert_id) -> str:
    html = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def test_finished_uploads_free_their_place_and_are_forgotten_after_five_minutes(block, identity):
    now = [1000.0]
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), UPLOAD_CLOCK=lambda: now[0],
                  WTF_CSRF_ENABLED=False)
    client = app.test_client()
    urls = []
    for i in range(web_uploads.MAX_OPEN + 1):  # one more than may be open at once, each finished in turn
        answer = client.post(f"/alerts/{block.raid}/uploads", data={"size": 10, "type": "image/jpeg"})
        assert answer.status_code == 201, (i, answer.json)  # before: 503 "busy" for the 9th, from anyone
        done = client.put(f"{answer.json['url']}?offset=0", data=b"p" * 10)
        assert done.status_code == 200 and done.json["done"], done.json
        urls.append(answer.json["url"])
    registry = app.extensions["silbato.uploads"]
    now[0] += web_uploads.DONE_KEEP - 1
    registry.sweep()
    assert client.get(urls[0]).json["done"]  # a phone that missed the last answer still learns it
    now[0] += 2
    assert registry.sweep() == 0  # forgotten, not aborted: its item stays
    gone = client.get(urls[0])
    assert gone.status_code == 404 and gone.json["restart"]
    assert len(sealed_items(block)) == web_uploads.MAX_OPEN + 1


def test_uploads_started_together_cannot_share_the_same_free_space(block, identity):
    folder = evidence_folder(block)
    cap = seal.used_bytes(folder) + 1_000_000
    app = app_for(block, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()), EVIDENCE_MAX_TOTAL=cap)
    client = app.test_client()
    token = _token(client, block.raid)
    first = client.post(f"/alerts/{block.raid}/uploads", data={"csrf_token": token, "size": 600_000})
    assert first.status_code == 201
    second = client.post(f"/alerts/{block.raid}/uploads", data={"csrf_token": token, "size": 600_000})
    assert second.status_code == 507, second.json  # before: 201, and both could be sealed past the cap
    form = client.post(f"/alerts/{block.raid}/evidence", content_type="multipart/form-data",
                       data={"csrf_token": token, "file": (io.BytesIO(b"f" * 500_000), "a.mp4", "video/mp4")})
    assert form.status_code == 507  # the form reserves against the same ledger (before: 303)
    assert seal.used_bytes(folder) <= cap
    # the first one ends (here: a piece past its size); its room is free again
    assert client.put(f"{first.json['url']}?offset=0", data=b"x" * 600_001,
                      headers={"X-CSRFToken": token}).status_code == 413
    assert seal.room(folder, cap) == cap - seal.used_bytes(folder)
    again = client.post(f"/alerts/{block.raid}/uploads", data={"csrf_token": token, "size": 600_000})
    assert again.status_code == 201
    app.extensions["silbato.uploads"].close()
    assert seal.LEDGER.outstanding(folder) == 0


def test_the_pipe_gives_back_the_pieces_in_order_whole_or_in_parts():
    """The sealer reads whole pieces (not copied) or parts of one; nothing is lost or doubled."""
    pipe = web_uploads.Pipe(1 << 20)
    pieces = [bytes([i]) * (1000 + i) for i in range(3)]
    for piece in pieces:
        pipe.write(piece, timeout=1)
    pipe.close()
    first = pipe.read(10_000)
    assert first is pieces[0]                      # a whole piece, as written
    got = [first, pipe.read(300), pipe.read(-1)]   # a part, then the rest of that piece
    while chunk := pipe.read(512):
        got.append(chunk)
    assert b"".join(got) == b"".join(pieces) and got[1] == pieces[1][:300]
