"""Seed data and helpers shared by the GitHub-layer tests (a module name no other area uses)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
REPLAY = SHARED / "fixtures" / "github" / "replay"
OPENAPI = SHARED / "fixtures" / "github" / "openapi"

TOKEN = "ghp_" + "S3cr3tT0k3n" * 3 + "abc"  # looks like a real token so scrubbing would catch a leak
REPO = "acme/widgets"

# a.py: one hunk (lines 1-4 old, 1-5 new); b.py: two hunks; c.txt added; old.py -> new.py renamed
PATCH_A = "@@ -1,4 +1,5 @@\n import os\n-x = 1\n+x = 2\n+y = 3\n def f():\n     return x"
PATCH_B = "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+v\n w"
PATCH_C = "@@ -0,0 +1,2 @@\n+hello\n+world"


def make_seed(**extra: object) -> dict:
    seed = {
        "tokens": [TOKEN, {"token": "read-only-token", "login": "viewer", "permission": "read"}],
        "repos": [
            {
                "owner": "acme",
                "name": "widgets",
                "owner_type": "Organization",
                "default_branch": "main",
                "files": {
                    "main": {".revbot.yml": "max_comments: 3\n", "a.py": "import os\nx = 1\n", "gone.py": "z\n"},
                    "feature-1": {".revbot.yml": "max_comments: 99\n", "a.py": "import os\nx = 2\n"},
                },
                "pulls": [
                    {
                        "number": 1,
                        "title": "Tune x",
                        "user": "alice",
                        "head": "feature-1",
                        "created_at": "2024-01-01T10:00:00Z",
                        "files": [
                            {"filename": "a.py", "status": "modified", "patch": PATCH_A},
                            {"filename": "b.py", "status": "modified", "patch": PATCH_B},
                            {"filename": "c.txt", "status": "added", "patch": PATCH_C},
                            {"filename": "new.py", "status": "renamed", "previous_filename": "old.py", "patch": None},
                            {"filename": "gone.py", "status": "removed", "patch": "@@ -1 +0,0 @@\n-z"},
                        ],
                        "comments": [
                            {
                                "id": 501,
                                "path": "a.py",
                                "line": 3,
                                "side": "RIGHT",
                                "body": "why 3?",
                                "user": {"login": "bob", "type": "User"},
                                "created_at": "2024-01-02T10:00:00Z",
                                "reactions": {"+1": 2, "-1": 1},
                            },
                            {
                                "id": 502,
                                "in_reply_to_id": 501,
                                "body": "because",
                                "user": "alice",
                                "created_at": "2024-01-03T10:00:00Z",
                            },
                        ],
                        "issue_comments": [{"body": "Thanks!", "user": "carol"}],
                        "reviews": [{"user": "bob", "state": "APPROVED", "body": ""}],
                    },
                    {
                        "number": 2,
                        "title": "Old one",
                        "user": "bob",
                        "state": "closed",
                        "merged": True,
                        "created_at": "2023-06-01T10:00:00Z",
                        "files": [{"filename": "a.py", "patch": PATCH_A}],
                    },
                ],
            }
        ],
    }
    seed.update(extra)
    return seed


class Sleeps(list):
    """Records the waits a client asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(float(seconds))
