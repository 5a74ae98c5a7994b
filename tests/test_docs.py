"""Docs are part of the feature: every CLI command and every setting is documented.

The README is the front page; the pages under docs/ hold the rest. A command or a setting
may be documented on any of them, but every page must be linked from the README, and
every relative link must lead to a file (and a heading, when it names one) that exists.
"""

import re
from pathlib import Path

import click
import pytest

from node.cli import cli
from node.config import SETTINGS, env_name
from node.protocol import wire

ROOT = Path(__file__).parent.parent
README_PATH = ROOT / "README.md"
PAGE_PATHS = sorted((ROOT / "docs").glob("*.md"))
README = README_PATH.read_text(encoding="utf-8")
DOCS = "\n".join([README] + [page.read_text(encoding="utf-8") for page in PAGE_PATHS])
FRAME_SIZES = ROOT / "docs" / "protocol.md"  # holds the wire format's frame-size table

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def commands(group: click.Group, prefix: str = "silbato"):
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        yield full
        if isinstance(command, click.Group):
            yield from commands(command, full)


@pytest.mark.parametrize("command", list(commands(cli)))
def test_every_cli_command_is_documented(command):
    assert f"`{command}" in DOCS, f"neither the README nor docs/ mention `{command}`"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting):
    assert f"`{setting.name}`" in DOCS, f"neither the README nor docs/ document {setting.name}"


def test_the_environment_rule_is_documented():
    assert env_name("radio.port") in DOCS


def test_the_frame_sizes_in_the_docs_are_the_codec_s():
    text = FRAME_SIZES.read_text(encoding="utf-8")
    assert f"| transition | {wire.frame_size(wire.FrameType.TRANSITION)} |" in text
    assert f"| receipt, 30 nodes | {wire.frame_size(wire.FrameType.RECEIPT, 8)} |" in text
    assert f"| heartbeat, 30 nodes | {wire.frame_size(wire.FrameType.HEARTBEAT, 30)} |" in text
    assert f"| nearby | {wire.frame_size(wire.FrameType.NEARBY)} |" in text


def test_the_two_setup_commands_are_in_the_readme_and_ci_runs_the_test_one():
    assert "bash .ci/demo" in README and "bash .ci/test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/test" in ci


def test_every_docs_page_is_linked_from_the_readme():
    assert PAGE_PATHS, "docs/ has no pages"
    linked = {(README_PATH.parent / target.split("#")[0]).resolve()
              for target in LINK.findall(README) if not target.startswith(("http:", "https:", "#"))}
    missing = [page.name for page in PAGE_PATHS if page.resolve() not in linked]
    assert not missing, f"the README links to no docs/{missing}"


def anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of a Markdown file: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("path", [README_PATH, *PAGE_PATHS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(path):
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http:", "https:", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{path.name}: " + "; ".join(broken)
