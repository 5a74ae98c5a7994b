"""Schemathesis against /api/openapi.json: generated requests, as a neighbor and as a captain, never get a 5xx.

Schemathesis's default checks run too: status codes, content types, response bodies and
each server-sent event must match the document. Requests that fit the document
(positive) and requests that do not (negative) are both sent; the run prints how many
requests the app answered and how many of them were server errors (there must be none).
"""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from websupport import add_captain, app_for, everywhere, login, make_block, until

from node.protocol.alerts import State

EXAMPLES = 15  # per operation, per generation mode; each example is sent as a neighbor and as a captain


class Counted:
    """WSGI middleware: how many requests the app answered, and which of them were server errors."""

    def __init__(self, app):
        self.app = app
        self.requests = 0
        self.server_errors: list[str] = []

    def __call__(self, environ, start_response):
        self.requests += 1

        def start(status, headers, exc_info=None):
            if status.startswith("5"):
                self.server_errors.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}: {status}")
            return start_response(status, headers, exc_info)
        return self.app(environ, start)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    block = make_block(tmp_path_factory.mktemp("openapi"))
    add_captain(block, 3, "ana")
    alert = block.nodes[1].report()
    until(block, lambda: everywhere(block, alert.id, State.REPORTED))
    block.nodes[2].act("confirm", alert.id)
    until(block, lambda: everywhere(block, alert.id, State.CONFIRMED))
    app = app_for(block, 3, STREAM_SECONDS=0.05, KEEPALIVE=0.02, RATE_LIMIT=None)
    client = app.test_client()
    assert login(client, "ana").status_code == 303
    token = client.get("/api/session").get_json()["csrf_token"]
    cookie = client.get_cookie("silbato_session").value
    app.config["captain_headers"] = {"Cookie": f"silbato_session={cookie}", "X-CSRFToken": token}
    yield app
    block.stop()


def test_no_generated_request_gets_a_server_error_and_every_answer_matches_the_document(api):
    """Every operation, generated cases as a neighbor and as a captain (with a valid CSRF token)."""
    counted = Counted(api)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", counted)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def no_server_error(case):
                case.call_and_validate(additional_checks=[not_a_server_error])
                case.call_and_validate(additional_checks=[not_a_server_error], headers=api.config["captain_headers"])

            try:
                no_server_error()
            except Unsatisfiable:
                # nothing to break: no parameters, or only a path string (any string is one)
                assert mode is GenerationMode.NEGATIVE, operation.path
        checked.append(f"{operation.method.upper()} {operation.path}")
    print(f"schemathesis: {len(checked)} operations, {counted.requests} requests, "
          f"{len(counted.server_errors)} server errors")
    assert len(checked) == 15, checked
    assert counted.server_errors == []


def test_the_document_is_openapi_3_and_lists_the_api(api):
    document = api.test_client().get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/nodes", "/api/health", "/api/events", "/api/live",
            "/api/requests", "/api/requests/{request_id}", "/api/alerts/{alert_id}/notes",
            "/api/alerts/{alert_id}/export"} <= document["paths"].keys()
    assert document["paths"]["/api/requests"]["post"]["security"] == [{"session": [], "csrf": []}]
    # every /api route of the app is in the document
    rules = {re.sub(r"<(?:[^:>]*:)?(\w+)>", r"{\1}", r.rule) for r in api.url_map.iter_rules()
             if r.rule.startswith("/api/")}
    assert rules == set(document["paths"]), rules ^ set(document["paths"])
