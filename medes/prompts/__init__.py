"""Versioned prompt templates (Jinja2, Chinese), rendered strictly; every record stores the template hash.

A template file `<name>.j2` holds a system part and a user part separated by a line `---user---`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jinja2

SEPARATOR = "---user---"


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str
    hash: str
    """sha256 (first 16 hex) of the template source, so a record names the exact prompt version."""


@lru_cache(maxsize=64)
def _template(name: str) -> tuple[str, jinja2.Template, jinja2.Template, str]:
    source = resources.files(__package__).joinpath(f"{name}.j2").read_text(encoding="utf-8")
    if SEPARATOR not in source:
        raise ValueError(f"prompt {name}.j2 lacks the {SEPARATOR!r} line between system and user parts")
    system_src, user_src = source.split(SEPARATOR, 1)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return source, env.from_string(system_src.strip()), env.from_string(user_src.strip()), digest


def render(name: str, **variables: object) -> Prompt:
    """Render a template; a missing variable is an error, never an empty string."""
    _, system, user, digest = _template(name)
    return Prompt(name=name, system=system.render(**variables), user=user.render(**variables), hash=digest)


def prompt_hash(name: str) -> str:
    return _template(name)[3]
