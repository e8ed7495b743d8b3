"""Helpers for harvest tests: seed builders for the GitHub simulator and secrets to look for."""

from __future__ import annotations

REPO = "acme/widgets"
SECRET_TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
SECRET_AWS = "AKIA" + "IOSFODNN7EXAMPLE"


def hunk_patch(hunks: int = 2, tag: str = "") -> str:
    """A file patch of ``hunks`` hunks. Hunk k covers new lines 40k+1 .. 40k+5: R(40k+1) context,
    R(40k+2) and R(40k+3) added, R(40k+4), R(40k+5) context; L(40k+2) deleted."""
    out = []
    for k in range(hunks):
        o = 40 * k + 1
        out.append(
            f"@@ -{o},4 +{o},5 @@ def f{k}{tag}():\n a{k} = 1\n-b{k} = 2\n+b{k} = 3{tag}\n+c{k} = 4\n d{k} = 5\n e{k} = 6"
        )
    return "\n".join(out)


def stamp(n: int) -> str:
    """Distinct, increasing timestamps (GitHub's have one-second resolution)."""
    day, rest = divmod(n, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}T{h:02d}:{m:02d}:{s:02d}Z"


def pull(
    number: int, user: str = "alice", files: dict[str, str] | None = None, comments: list[dict] | None = None
) -> dict:
    files = files or {"src/app.py": hunk_patch(2, f"_{number}")}
    return {
        "number": number,
        "user": user,
        "title": f"Change {number}",
        "created_at": stamp(number),
        "files": [{"filename": name, "status": "modified", "patch": patch} for name, patch in files.items()],
        "comments": comments or [],
    }


def comment(n: int, line: int, body: str, user: str = "bob", path: str = "src/app.py", **extra) -> dict:
    return {
        "id": 10_000 + n,
        "path": path,
        "line": line,
        "side": "RIGHT",
        "body": body,
        "user": user,
        "created_at": stamp(1000 + n),
        **extra,
    }


def many_comments_seed(prs: int, per_pr: int, start_pr: int = 1, total_prs: int | None = None) -> dict:
    """``prs`` PRs with ``per_pr`` distinct review comments each (distinct timestamps), inside a
    repository of ``total_prs`` PRs."""
    pulls, n = [], 0
    with_comments = set(range(start_pr, start_pr + prs))
    for number in range(1, (total_prs or (start_pr + prs - 1)) + 1):
        cs = []
        if number in with_comments:
            for k in range(per_pr):
                n += 1
                line = 40 * (k % 2) + 2 + (k // 2) % 2
                cs.append(comment(n, line, f"Please reconsider this name ({n})."))
        pulls.append(pull(number, comments=cs))
    return {"repos": [{"owner": "acme", "name": "widgets", "pulls": pulls}]}
