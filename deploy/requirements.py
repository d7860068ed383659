"""Print the dependencies of the package and of some of its extras, one per line.

The Dockerfile installs them in a layer of their own, from ``pyproject.toml`` alone,
before the source is copied, so editing the source does not reinstall every dependency::

    python deploy/requirements.py pyproject.toml all > requirements.txt

Extras that name the package itself (``limitless-streamer[nats,redis]``) are expanded.
Standard library only: it runs on the bare base image.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies plus those of ``extras``, self-references expanded."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name = re.sub(r"[-_.]+", "-", project["name"]).lower()
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(items: list[str]) -> None:
        for item in items:
            own = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*\[([^\]]*)\]\s*", item)
            if own and re.sub(r"[-_.]+", "-", own[1]).lower() == name:
                for extra in own[2].split(","):
                    expand(extra.strip())
            elif item not in out:
                out.append(item)

    def expand(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no extra named {extra!r}")
        seen.add(extra)
        add(optional[extra])

    add(project.get("dependencies", []))
    for extra in extras:
        expand(extra)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python requirements.py PYPROJECT [EXTRA...]")
    sys.stdout.write("".join(f"{line}\n" for line in
                             requirements(Path(sys.argv[1]), sys.argv[2:])))
