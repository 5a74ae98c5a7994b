"""Helpers for the web tests: a simulated block on virtual time, its pages' apps, captains, CSRF tokens."""

from __future__ import annotations

import re

from werkzeug.security import generate_password_hash

from node.sim import Block
from node.store import Store
from web import create_app, settings

PASSWORD = "correct horse battery"
# The real default costs 32 MB and a noticeable part of a second; tests use a cheap scrypt.
CHEAP_SCRYPT = "scrypt:1024:8:1"


def make_block(root, n: int = 3, **kwargs) -> Block:
    return Block(root, n, "line", hold_time=0.05, **kwargs).start()


def app_for(block: Block, i: int, **config):
    """Node i's page app, on the block's clock; a captain's request wakes node i as in the sim."""
    cfg = block.files.configs[i - 1]
    return create_app({**settings(cfg), "TESTING": True, "CLOCK": block.clock,
                       "ON_REQUEST": lambda: block.scheduler.after(0, block.nodes[i].process_requests), **config})


def add_captain(block: Block, i: int, name: str, password: str = PASSWORD) -> None:
    store = Store(block.files.configs[i - 1].db_file)
    try:
        store.add_captain(name, generate_password_hash(password, method=CHEAP_SCRYPT), block.clock())
    finally:
        store.close()


def csrf_token(client, path: str = "/captain/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match[1]


def login(client, name: str, password: str = PASSWORD, **kwargs):
    token = csrf_token(client)
    return client.post("/captain/login", data={"name": name, "password": password, "csrf_token": token}, **kwargs)


def settle(block: Block, seconds: float = 3.0) -> None:
    """Let the nodes pick up requests and the air carry frames, in virtual time."""
    block.scheduler.run_for(seconds)


def until(block: Block, predicate, limit: float = 900.0) -> None:
    """Run the block's virtual time until ``predicate()`` holds (frames may collide: re-sends follow)."""
    assert block.scheduler.run_until_true(predicate, limit=limit, step=0.5) is not None, "never happened"


def everywhere(block: Block, alert_id: str, state) -> bool:
    """Whether every node holds ``alert_id`` in ``state``."""
    return all((a := node.store.get_alert(alert_id)) is not None and a.state is state for node in block.nodes.values())
