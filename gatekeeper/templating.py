"""Query templates: `${name}` placeholders filled from built-in and user variables.

`$` placeholders are used because PromQL itself is full of braces. `$$` is a literal `$`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from string import Template


def template_variables(text: str) -> set[str]:
    """Names used by a template; raise ValueError on a malformed placeholder."""
    template = Template(text)
    if not template.is_valid():
        bad = re.search(r"\$(?!\$|\{?[_a-zA-Z])", text)
        where = f" at {text[bad.start():bad.start() + 12]!r}" if bad else ""
        raise ValueError(f"malformed placeholder{where}: use ${{name}} (or $$ for a literal $)")
    return set(template.get_identifiers())


def render(text: str, variables: Mapping[str, str]) -> str:
    """Fill a template; a missing variable raises KeyError naming it."""
    return Template(text).substitute(variables)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def namespace_regex(namespaces: Iterable[str]) -> str:
    """An alternation matching exactly these namespaces (Prometheus anchors `=~` itself).

    Namespace names are DNS labels, so they hold no regex metacharacters; anything else is
    refused rather than escaped, because PromQL string literals reject `\\-` style escapes.
    """
    names = sorted(set(namespaces))
    for name in names:
        if not _DNS_LABEL.match(name):
            raise ValueError(f"not a valid namespace name: {name!r}")
    return "|".join(names)
