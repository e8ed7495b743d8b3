"""Test data for the finetune tests: real review comments from ../shared/data/crc-py converted to the
training-example schema (plus negative examples cut from the same hunks), and small synthetic sets."""
from __future__ import annotations

import json
from pathlib import Path

from bot.diff import parse_hunk
from bot.examples import Example, ExampleComment, example_id


def crc_examples(path: Path, limit: int | None = None, negatives_every: int = 3) -> list[Example]:
    """crc-py rows -> Examples. GitHub's diff_hunk ends at the commented line, so the comment sits on
    the hunk's last line. Every ``negatives_every``-th row also yields a negative example: the part of
    the hunk before the commented line (a stretch the reviewer left alone)."""
    out: list[Example] = []
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh):
            if limit is not None and len(out) >= limit:
                break
            row = json.loads(text)
            try:
                hunk = parse_hunk(row["code"])
            except Exception:
                continue
            if not hunk.lines or not str(row.get("comment") or "").strip():
                continue
            last = hunk.lines[-1]
            repo = f"{row['owner']}/{row['repo']}"
            comment = ExampleComment(last.number, last.side, row["comment"])
            out.append(Example(
                id=example_id(repo, row["pr_number"], row["file_path"], hunk.header, str(row["comment_id"])),
                repo=repo, pr=int(row["pr_number"]), path=row["file_path"], hunk=hunk.text(),
                comments=[comment], created_at=row["comment_created_at"], source="crc-py",
            ))
            if negatives_every and n % negatives_every == 0 and len(hunk.lines) > 3:
                head = hunk.sub_hunk(0, len(hunk.lines) // 2)
                out.append(Example(
                    id=example_id(repo, row["pr_number"], row["file_path"], head.header, f"neg{row['comment_id']}"),
                    repo=repo, pr=int(row["pr_number"]), path=row["file_path"], hunk=head.text(),
                    comments=[], created_at=row["comment_created_at"], source="crc-py",
                ))
    return out
