"""revbot uses PyGithub's and urllib3's public API only (issue 12): no private attribute or method
of theirs is read, set or overridden anywhere in the product code, so an upgrade cannot break it
silently. The private names are taken from the installed libraries themselves."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import github
import urllib3

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("bot", "adapters", "harvest", "finetune", "webhooks", "revbot")


def product_sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
        for package in PRODUCT
        for p in sorted((ROOT / package).rglob("*.py"))
    }


def private_names(*modules) -> set[str]:
    """Single-underscore names defined by the classes of these libraries (not dunders)."""
    names: set[str] = set()
    for module in modules:
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__.startswith(module.__name__.split(".")[0]):
                for cls in obj.__mro__:
                    if cls.__module__.startswith(module.__name__.split(".")[0]):
                        names.update(n for n in vars(cls) if n.startswith("_") and not n.startswith("__"))
    return names


def test_the_product_code_is_found():
    sources = product_sources()
    assert "adapters/github.py" in sources and "harvest/mine.py" in sources and len(sources) > 30


def test_no_requester_reach_in_no_cloning_no_monkeypatched_methods():
    offenders = []
    for path, text in product_sources().items():
        for pattern in (
            r"\._requester\b",
            r"__requester",
            r"_Github__",
            r"object\.__new__",
            r"\.get_backoff_time\s*=",
            r"_masked_token",
        ):
            offenders += [f"{path}: {pattern}" for _ in re.finditer(pattern, text)]
    assert offenders == []


def test_no_private_name_of_urllib3_or_pygithub_is_used():
    from github import Auth, GithubRetry, MainClass, Requester
    from urllib3.util import retry

    names = private_names(retry, Requester, GithubRetry, MainClass, Auth, urllib3.response, urllib3.connectionpool)
    assert {"_is_read_error", "_sleep_backoff", "_masked_token"} <= names  # the list is real
    # the parameters urllib3's public Retry.increment() is declared with are not attribute uses
    allowed = set(inspect.signature(retry.Retry.increment).parameters)
    used = []
    for path, text in product_sources().items():
        for name in names - allowed:
            if re.search(rf"(\.|def\s+){re.escape(name)}\b", text):
                used.append(f"{path}: {name}")
    assert used == [], "private names of urllib3/PyGithub in revbot: " + ", ".join(used)
    assert github.__name__ == "github"
