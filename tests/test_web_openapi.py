"""Schemathesis against /api/openapi.json: generated requests, as a neighbor and as a captain, never get a 5xx.

Schemathesis's default checks run too: status codes, content types, response bodies and
each server-sent event must match the document.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from websupport import add_captain, app_for, everywhere, login, make_block, until

from node.protocol.alerts import State


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    block = make_block(tmp_path_factory.mktemp("openapi"))
    add_captain(block, 3, "ana")
    alert = block.nodes[1].report()
    until(block, lambda: everywhere(block, alert.id, State.REPORTED))
    block.nodes[2].act("confirm", alert.id)
    until(block, lambda: everywhere(block, alert.id, State.CONFIRMED))
    app = app_for(block, 3, STREAM_SECONDS=0.05, KEEPALIVE=0.02)
    client = app.test_client()
    assert login(client, "ana").status_code == 303
    token = client.get("/api/session").get_json()["csrf_token"]
    cookie = client.get_cookie("silbato_session").value
    app.config["captain_headers"] = {"Cookie": f"silbato_session={cookie}", "X-CSRFToken": token}
    yield app
    block.stop()


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_gets_a_server_error_and_every_answer_matches_the_document(api):
    """Every operation, generated cases as a neighbor and as a captain (with a valid CSRF token)."""
    checked = []
    for operation in operations(api):
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def no_server_error(case):
            case.call_and_validate(additional_checks=[not_a_server_error])
            case.call_and_validate(additional_checks=[not_a_server_error], headers=api.config["captain_headers"])

        no_server_error()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) == 14, checked


def test_the_document_is_openapi_3_and_lists_the_api(api):
    document = api.test_client().get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/nodes", "/api/health", "/api/events", "/api/live",
            "/api/requests", "/api/requests/{request_id}", "/api/alerts/{alert_id}/notes",
            "/api/alerts/{alert_id}/export"} <= document["paths"].keys()
    assert document["paths"]["/api/requests"]["post"]["security"] == [{"session": [], "csrf": []}]
    # every /api route of the app is in the document
    rules = {r.rule.replace("<int:", "{").replace("<", "{").replace(">", "}") for r in api.url_map.iter_rules()
             if r.rule.startswith("/api/")}
    assert rules == set(document["paths"]), rules ^ set(document["paths"])
