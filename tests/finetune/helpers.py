"""Test data for the finetune tests: real review comments from ../shared/data/crc-py converted to the
training-example schema (plus negative examples cut from the same hunks), and small synthetic sets."""

from __future__ import annotations

import json
from contextlib import contextmanager
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
            out.append(
                Example(
                    id=example_id(repo, row["pr_number"], row["file_path"], hunk.header, str(row["comment_id"])),
                    repo=repo,
                    pr=int(row["pr_number"]),
                    path=row["file_path"],
                    hunk=hunk.text(),
                    comments=[comment],
                    created_at=row["comment_created_at"],
                    source="crc-py",
                )
            )
            if negatives_every and n % negatives_every == 0 and len(hunk.lines) > 3:
                head = hunk.sub_hunk(0, len(hunk.lines) // 2)
                out.append(
                    Example(
                        id=example_id(repo, row["pr_number"], row["file_path"], head.header, f"neg{row['comment_id']}"),
                        repo=repo,
                        pr=int(row["pr_number"]),
                        path=row["file_path"],
                        hunk=head.text(),
                        comments=[],
                        created_at=row["comment_created_at"],
                        source="crc-py",
                    )
                )
    return out


_FUNCS = [
    "load_config",
    "parse_args",
    "fetch_user",
    "save_cache",
    "read_rows",
    "send_mail",
    "build_index",
    "open_socket",
    "merge_dicts",
    "render_page",
]
_COMMENTS = {
    "open": "The file handle is never closed; use a with block.",
    "get": "This can raise a KeyError when the key is missing; use .get() with a default.",
    "timeout": "Why is the timeout hard-coded here? Read it from the config instead.",
    "print": "Please use the logger instead of print.",
}


def synthetic_examples(
    n_prs: int = 30, per_pr: int = 2, start_year: int = 2023, fixed_start: int | None = None
) -> list[Example]:
    """Short, learnable examples: each PR changes a small function; some changes draw the team's
    usual comment (on the last added line), the others are left alone. PR k is dated day k.
    ``fixed_start``: every hunk starts at that line, so every comment sits on the same line number
    (easier to learn: a tiny model gets anchors right within a few dozen steps)."""
    out = []
    kinds = list(_COMMENTS)
    for pr in range(1, n_prs + 1):
        for j in range(per_pr):
            k = pr * per_pr + j
            func = _FUNCS[k % len(_FUNCS)]
            start = fixed_start if fixed_start is not None else 10 + (k % 7) * 3
            if (k % 3) == 2:  # a harmless rename: humans said nothing
                body = [
                    f" def {func}(path):",
                    f"-    value = old_{func}(path)",
                    f"+    value = new_{func}(path)",
                    "     return value",
                ]
                hunk = f"@@ -{start},3 +{start},3 @@\n" + "\n".join(body)
                comments = []
            else:
                kind = kinds[k % len(kinds)]
                added = {
                    "open": "+    handle = open(path)",
                    "get": "+    value = table[key]",
                    "timeout": "+    response = session.get(url, timeout=30)",
                    "print": "+    print(value)",
                }[kind]
                body = [f" def {func}(path):", f"     value = {func}_impl(path)", added]
                hunk = f"@@ -{start},2 +{start},3 @@\n" + "\n".join(body)
                comments = [ExampleComment(start + 2, "RIGHT", _COMMENTS[kind])]
            header = hunk.split("\n", 1)[0]
            out.append(
                Example(
                    id=example_id("acme/app", pr, f"src/{func}.py", header, str(j)),
                    repo="acme/app",
                    pr=pr,
                    path=f"src/{func}.py",
                    hunk=hunk,
                    comments=comments,
                    created_at=f"{start_year}-{1 + pr // 28:02d}-{1 + pr % 28:02d}T00:00:00Z",
                    source="test",
                )
            )
    return out


@contextmanager
def one_torch_thread():
    """Run torch ops on one thread. The tiny models gain nothing from a second one, and on a busy
    2-core machine an OpenMP thread that loses its core stalls every op (the suite ran 10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `revbot ARGS` in this process through the real entry point; (exit code, stdout, stderr)."""
    from revbot.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
