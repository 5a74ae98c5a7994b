"""The version is written once (node/__init__.py); the changelog and the docs' examples agree with it."""

import re
from pathlib import Path

import node

ROOT = Path(__file__).resolve().parent.parent


def test_the_newest_changelog_entry_is_this_version():
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert newest and newest[1] == node.__version__


def test_the_docs_name_this_version_or_a_placeholder():
    """A wheel or tag in an example is this version or ``<version>``, never another release's number."""
    pattern = re.compile(r"silbato-([^-\s`]+)-py3-none-any\.whl|@v([^\s`)]+)")
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in pattern.finditer(doc.read_text()):
            version = match[1] or match[2]
            if version not in (node.__version__, "<version>"):
                found.append(f"{doc.name}: {match[0]}")
    assert found == []
