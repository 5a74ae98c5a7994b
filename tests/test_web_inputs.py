"""Inputs that must never become a 500: each one found, then generated ones at every route of the app.

The named cases are the ones the hardening round found (a long ``Host``, JSON nested
1,200 deep, a request id beyond SQLite's integers, a ``next`` with a newline) and one
found while writing the property test (a form location "²", which ``str.isdigit`` accepts). The
property test enumerates ``app.url_map``, fills each rule's converters with generated
values and sends generated methods, headers (``Host`` included), query strings and
bodies, as a neighbor and as a logged-in captain with a valid CSRF token: nothing may
answer 5xx but a deliberate 503 (with ``Retry-After``).
"""

import collections
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder
from websupport import PASSWORD, add_captain, app_for, csrf_token, everywhere, login, make_block, until

from node.protocol.alerts import State
from web import create_app
from web.auth import Throttle

EXAMPLES = {"GET": 30, "POST": 150, "PUT": 60}  # per route and method: the POST routes read more


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = make_block(tmp_path_factory.mktemp("inputs"))
    add_captain(b, 3, "ana")
    alert = b.nodes[1].report()
    until(b, lambda: everywhere(b, alert.id, State.REPORTED))
    b.alert_id = alert.id
    yield b
    b.stop()


@pytest.fixture(scope="module")
def app(block):
    return app_for(block, 3, RATE_LIMIT=None, STREAM_SECONDS=0.01, KEEPALIVE=0.005)


class Captain:
    """A logged-in captain's session cookie and CSRF token, renewed if a generated request logs out."""

    def __init__(self, app):
        self.app = app
        self.renew()

    def renew(self) -> None:
        client = self.app.test_client()
        assert login(client, "ana").status_code == 303
        self.token = client.get("/api/session").get_json()["csrf_token"]
        self.cookie = client.get_cookie("silbato_session").value  # now holding the token's secret too

    def logged_in(self) -> bool:
        client = self.app.test_client(use_cookies=False)
        who = client.get("/api/session", headers={"Cookie": f"silbato_session={self.cookie}"}).get_json()
        return who["captain"] == "ana"


def assert_no_server_error(response, what: str) -> None:
    status = response.status_code
    assert status < 500 or (status == 503 and "Retry-After" in response.headers), f"{status} for {what}"


# -- the cases the hardening round found ------------------------------------------------------------

@pytest.mark.parametrize("url", ["/", "/captain/login", "/nope", "/api/alerts", "/static/silbato.css"])
def test_a_host_header_that_cannot_be_routed_is_a_400_and_logs_no_traceback(app, url, caplog):
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        for host in ("a" * 64, "a" * 64 + ".example", "x..y"):
            response = client.get(url, headers={"Host": host})
            assert response.status_code == 400, (url, host)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    page = client.get("/captain/login", headers={"Host": "a" * 64}).get_data(as_text=True)
    assert "That request was not understood." in page


def test_json_nested_too_deep_is_a_400(app, block):
    captain = Captain(app)
    client = app.test_client(use_cookies=False)
    headers = {"Cookie": f"silbato_session={captain.cookie}", "X-CSRFToken": captain.token}
    for depth in (1_200, 5_000):
        for url in ("/api/requests", f"/api/alerts/{block.alert_id}/notes"):
            response = client.post(url, data="[" * depth + "]" * depth, content_type="application/json",
                                   headers=headers)
            assert response.status_code == 400, (url, depth)
            assert response.get_json() == {"error": "expected a JSON object" if url == "/api/requests"
                                           else "expected a JSON object with a text"}


def test_a_request_id_beyond_sqlite_s_integers_is_a_404(app):
    captain = Captain(app)
    client = app.test_client(use_cookies=False)
    headers = {"Cookie": f"silbato_session={captain.cookie}"}
    for request_id in ("99999999999999999999", str(2**63), "9223372036854775807", "0"):
        response = client.get(f"/api/requests/{request_id}", headers=headers)
        assert response.status_code == 404 and response.get_json() is not None, request_id


def test_a_form_location_that_only_looks_like_digits_is_no_place(app):
    captain = Captain(app)
    client = app.test_client(use_cookies=False)
    response = client.post("/captain/act", data={"action": "raise", "location": "²", "csrf_token": captain.token},
                           headers={"Cookie": f"silbato_session={captain.cookie}"})
    assert response.status_code == 400 and "a report needs a place" not in response.get_data(as_text=True)


# -- every route, generated inputs ------------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=80)
HOSTS = st.one_of(st.sampled_from(["localhost", "127.0.0.1:8080", "a" * 64, "a" * 300, "[::1]:80", "x..y",
                                   "EXAMPLE.org.", "-a-.b", "xn--", "xn--zz", "ñ.example", "a:b:c"]),
                  HEADER_TEXT)
SEGMENT = st.one_of(st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
NUMBER = st.one_of(st.integers(min_value=0, max_value=2**70), st.sampled_from([0, 1, 2**63 - 1, 2**63, 10**20]))
OTHER_METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
NEXTS = st.one_of(st.sampled_from(["/captain", "/\t/evil.example", "/\n/x", "/\r\n", "//evil", "/%0a"]), st.text())
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


def field(*usual: str) -> st.SearchStrategy:
    """A form field or JSON member: mostly a value the route expects, else anything."""
    return st.integers(0, 3).flatmap(lambda n: st.sampled_from(usual) if n else st.one_of(st.text(max_size=60), NEXTS))


def bodies(alert_id: str) -> dict[str, st.SearchStrategy]:
    """What each form or JSON route reads, by endpoint; members may be missing, values anything."""
    def form(**fields):  # every field the view reads (a body of another kind leaves them out)
        return st.fixed_dictionaries(fields).map(
            lambda f: (urllib.parse.urlencode(f).encode(), "application/x-www-form-urlencoded"))

    def json_body(**members):
        return st.fixed_dictionaries({k: st.one_of(v, v, JSON_VALUES) for k, v in members.items()}).map(
            lambda v: (json.dumps(v).encode("utf-8", "surrogatepass"), "application/json"))

    actions = ("raise", "test", "confirm", "all_clear", "cancel", "wipe")
    return {
        "captain.login": form(name=field("ana", "bob"), password=field(PASSWORD),
                              next=field("/captain", "/\t/evil.example", "/\n/x", "/\r\n", "//evil", "/%0a")),
        "captain.act": form(action=field(*actions), location=field("101", "103", "²", "-1", "1" * 30),
                            alert=field(alert_id, "1-1", "9-9")),
        "captain.add_note": form(text=field("agents at the door", " " * 3, "x" * 300)),
        "api.create_request": json_body(action=field(*actions), alert=field(alert_id, "9-9"),
                                        location=st.one_of(st.sampled_from([101, 103]), NUMBER)),
        "api.add_note": json_body(text=field("agents at the door", "x" * 300)),
        "uploads.start": form(size=field("1", "5000000", "-1", "0", "x", "9" * 30), type=field("video/mp4", "ä" * 300)),
    }


@dataclass
class Generated:
    method: str
    path: str
    query: str
    headers: dict
    cookies: dict
    body: bytes
    content_type: str | None
    as_captain: bool  # with the captain's session cookie
    with_token: bool  # and the CSRF token in X-CSRFToken


@st.composite
def requests(draw, rule, method: str, alert_id: str) -> Generated:
    """One request to ``rule`` (``None``: a path that is no route) filled with generated values,
    now and then with another method, and generated query, headers, cookies and body."""
    if rule is None or draw(st.integers(0, 19)) == 0:
        path = "/" + "/".join(urllib.parse.quote(draw(SEGMENT), safe="") for _ in range(draw(st.integers(0, 3))))
    else:
        values = {}
        for name, converter in rule._converters.items():
            if type(converter).__name__ in ("IntegerConverter", "NumberConverter"):
                values[name] = str(draw(NUMBER))
            elif name == "alert_id":
                values[name] = draw(st.one_of(st.just(alert_id), SEGMENT))
            elif name == "filename":
                values[name] = draw(st.one_of(st.sampled_from(["silbato.css", "silbato.js", "../x"]), SEGMENT))
            else:
                values[name] = draw(SEGMENT)
        path = re.sub(r"<(?:[^:>]*:)?(\w+)>",
                      lambda m: urllib.parse.quote(values[m[1]], safe="/" if m[1] == "filename" else ""), rule.rule)
    if draw(st.integers(0, 5)) == 0:
        method = draw(OTHER_METHODS)
    query = urllib.parse.urlencode(draw(st.dictionaries(
        st.sampled_from(["lang", "next", "req", "v", "x"]), st.one_of(NEXTS, st.sampled_from(["es", "ko", "tl"])),
        max_size=3)))
    headers = {"Host": "localhost" if draw(st.integers(0, 2)) else draw(HOSTS)}  # mostly one that routes
    headers.update(draw(st.dictionaries(
        st.sampled_from(["Accept-Language", "Last-Event-ID", "If-None-Match", "Accept", "Referer", "Origin",
                         "X-Forwarded-For", "Range"]), HEADER_TEXT, max_size=3)))
    cookies = draw(st.dictionaries(st.sampled_from(["lang", "silbato_device", "silbato_session", "x"]),
                                   st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                         blacklist_characters=';,"\\'), max_size=40), max_size=2))
    usual = bodies(alert_id).get(rule.endpoint) if rule is not None else None
    kind = draw(st.sampled_from((["usual"] * 3 if usual is not None else []) + ["none", "json", "deep", "bytes"]))
    if kind == "usual":
        body, content_type = draw(usual)
    elif kind == "json":
        body, content_type = json.dumps(draw(JSON_VALUES)).encode("utf-8", "surrogatepass"), "application/json"
    elif kind == "deep":
        depth = draw(st.integers(900, 6000))
        body, content_type = ("[" * depth + "]" * depth).encode(), "application/json"
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
        content_type = draw(st.sampled_from(["application/json", "multipart/form-data; boundary=x",
                                             "application/x-www-form-urlencoded", "text/plain", "ä/ö"]))
    else:
        body, content_type = b"", None
    as_captain = draw(st.integers(0, 2)) > 0
    return Generated(method, path, query, headers, cookies, body, content_type, as_captain,
                     as_captain and draw(st.integers(0, 9)) > 0)


# Every rule of the app with each of its methods, and paths that are no route (built once to list them).
ROUTES = [(rule.endpoint, method) for rule in create_app({"DATABASE": ""}).url_map.iter_rules()
          for method in sorted(rule.methods - {"HEAD", "OPTIONS"})] + [(None, "GET")]
SENT = collections.Counter()


@pytest.fixture(scope="module")
def captain(app):
    yield Captain(app)
    print(f"\ngenerated requests: {sum(SENT.values())} over {len(ROUTES) - 1} routes and methods; "
          f"statuses {dict(sorted(SENT.items()))}")


@pytest.mark.parametrize("endpoint, method", ROUTES, ids=[f"{m} {e or 'no route'}" for e, m in ROUTES])
def test_no_generated_request_gets_a_server_error(app, block, captain, endpoint, method):
    rule = next((r for r in app.url_map.iter_rules() if r.endpoint == endpoint), None)

    @given(requests(rule, method, block.alert_id))
    @settings(max_examples=EXAMPLES[method], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def no_server_error(r: Generated):
        app.extensions["silbato.throttle"] = Throttle()  # else failed logins soon lock every later one out (429)
        jar, headers = dict(r.cookies), dict(r.headers)
        if r.as_captain:
            jar["silbato_session"] = captain.cookie
            if r.with_token:
                headers["X-CSRFToken"] = captain.token
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        # straight to the WSGI app: the test client itself fails on some Host headers after the app answered
        environ = EnvironBuilder(path=r.path, method=r.method, query_string=r.query, headers=headers, data=r.body,
                                 content_type=r.content_type).get_environ()
        response = app.response_class.from_app(app, environ, buffered=True)  # a stream runs to its end
        SENT[response.status_code] += 1
        assert_no_server_error(response, f"{r.method} {r.path}?{r.query} {headers} {r.body[:200]!r}")
        if r.path == "/captain/logout" and not captain.logged_in():
            captain.renew()

    no_server_error()


# -- where a login sends the captain next ------------------------------------------------------------

BYPASSES = ["//evil.example/", "///evil.example", "https://evil.example/", "https:evil.example", "javascript:alert(1)",
            "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "/\n/evil.example", "/\r/evil.example",
            "/\r\n/evil.example", "\t//evil.example", " //evil.example", "/ /evil.example", "/\x0b/evil.example",
            "/\x00/evil.example", "/%09/evil.example", "/%0a/evil.example", "/%2F/evil.example", "/%2f%2fevil.example",
            "/%5Cevil.example", "/%5C%5Cevil.example", "\uff0f\uff0fevil.example", "/\u3000/evil.example",
            "/\u2028/evil.example", "http:/\\evil.example", "evil.example", "", "/captain/" + "a" * 3000]
PATHS = ["/captain", "/captain/alerts/1-1", "/captain?req=3#requests", "/captain/alerts/1-1%2F2", "/.//x"]


@pytest.mark.parametrize("target", BYPASSES)
def test_a_login_never_sends_the_captain_to_another_site(app, target):
    client = app.test_client()
    response = client.post("/captain/login", data={"name": "ana", "password": PASSWORD, "next": target,
                                                   "csrf_token": csrf_token(client)})
    assert response.status_code == 303 and response.headers["Location"] == "/captain", repr(target)


@pytest.mark.parametrize("target", PATHS)
def test_a_login_goes_on_to_a_path_on_this_site(app, target):
    client = app.test_client()
    response = client.post("/captain/login", data={"name": "ana", "password": PASSWORD, "next": target,
                                                   "csrf_token": csrf_token(client)})
    assert response.status_code == 303 and response.headers["Location"] == target
