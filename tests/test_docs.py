"""The documentation index: README.md links every page in docs/, and every page it links exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_page_in_docs_is_linked_from_the_readme():
    """A page nobody can find from the README is a page nobody reads."""
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    missing = [page for page in pages if f"]({page})" not in README]
    assert not missing, f"README.md does not link: {missing}"


def test_every_docs_link_in_the_readme_exists():
    """A renamed or deleted page leaves no dead link behind."""
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", README))
    dead = sorted(link for link in linked if not (ROOT / link).exists())
    assert linked and not dead, f"README.md links missing files: {dead}"
