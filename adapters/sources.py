"""Diff sources that read the world: a diff file on disk (``FileSource``) and git in a local
repository (``GitSource``, through GitPython). Both satisfy ``bot.review.DiffSource``; the in-memory
``TextSource`` stays in the domain (``bot.review``)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.diff import Diff, parse_diff
from bot.errors import UsageError
from bot.ranking import LINGUIST_ATTRIBUTES, Linguist

if TYPE_CHECKING:
    import git

log = logging.getLogger(__name__)


@dataclass
class FileSource:
    """A diff file on disk (git diff, a GitHub .diff, hg, svn)."""

    path: str | Path

    def read(self) -> Diff:
        p = Path(self.path)
        try:
            data = p.read_bytes()
        except IsADirectoryError as exc:
            raise UsageError(f"{p} is a directory, not a diff file") from exc
        except OSError as exc:
            raise UsageError(f"cannot read diff file {p}: {exc.strerror or exc}") from exc
        return parse_diff(data, str(p))


_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's well-known empty tree


@dataclass
class GitSource:
    """A diff computed by git in a local repository.

    ``rev_range``: ``A...B`` (changes on B since it forked from A, what a pull request shows),
    ``A..B`` (A's tree against B's), a single revision (that revision against the working tree),
    or None (uncommitted changes: HEAD against the working tree). ``staged``: HEAD against the
    index (what `git commit` would record); with a single revision, that revision against the index.
    Untracked files are not part of any of these, as with `git diff`.
    """

    repo: str | Path = "."
    rev_range: str | None = None
    staged: bool = False

    def read(self) -> Diff:
        import git

        try:
            repo = git.Repo(str(self.repo), search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise UsageError(f"{self.repo} is not inside a git repository") from exc
        rev = (self.rev_range or "").strip()
        if rev.startswith("-") or any(ch.isspace() for ch in rev):
            raise UsageError(f"invalid revision range {rev!r}")
        if rev and self.staged and (".." in rev):
            raise UsageError("--staged compares the index with one revision; do not combine it with a range")
        args = [
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "-M",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--no-relative",
        ]
        if self.staged:
            args.append("--cached")
        if rev:
            args.append(rev)
        elif not self._has_head(repo):
            args.append(_EMPTY_TREE)  # a repository with no commit yet: everything is new
        else:
            args.append("HEAD")
        args.append("--")
        label = "git diff " + ("--cached " if self.staged else "") + (rev or "HEAD")
        try:
            data = repo.git.diff(*args, stdout_as_string=False)
        except git.GitCommandError as exc:
            detail = _git_error(exc.stderr)
            raise UsageError(f"git could not compute the diff for {rev or 'the working tree'}: {detail}") from exc
        finally:
            repo.close()
        return parse_diff(data if data.endswith(b"\n") or not data else data + b"\n", label)

    def attributes(self, paths: Sequence[str]) -> dict[str, Linguist]:
        """The linguist attributes of ``paths`` as git itself resolves them (every .gitattributes
        in the tree, macros, the info/attributes file), from the right side of the range when git
        can read another tree's attributes (git 2.40+), else from the working tree. {} when git
        cannot say: ranking then uses its built-in rules alone."""
        import git

        if not paths:
            return {}
        try:
            repo = git.Repo(str(self.repo), search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return {}
        rev = (self.rev_range or "").strip()
        right = rev.split("..")[-1].lstrip(".") if ".." in rev else ""
        options = ["-z"]
        try:
            if right and tuple(repo.git.version_info[:2]) >= (2, 40):
                options.append(f"--source={right}")
            found: dict[str, dict[str, str]] = defaultdict(dict)
            for start in range(0, len(paths), 256):  # stay far below any command-line limit
                out = repo.git.check_attr(*options, *LINGUIST_ATTRIBUTES, "--", *paths[start : start + 256])
                fields = out.split("\0")
                for path, name, value in zip(fields[0::3], fields[1::3], fields[2::3]):
                    found[path][name] = value
        except git.GitCommandError as exc:
            log.warning("git check-attr failed (%s); ranking files without .gitattributes", _git_error(exc.stderr))
            return {}
        finally:
            repo.close()
        result = {path: Linguist.from_values(values) for path, values in found.items()}
        return {path: attrs for path, attrs in result.items() if attrs}

    @staticmethod
    def _has_head(repo: git.Repo) -> bool:
        try:
            repo.head.commit  # noqa: B018 - raises on an unborn branch
            return True
        except ValueError:
            return False


def _git_error(stderr: str | None) -> str:
    """The first line of git's own message, out of GitPython's ``stderr: '...'`` wrapping."""
    text = (stderr or "").strip()
    if text.startswith("stderr: '"):
        text = text[len("stderr: '") :]
        text = text[:-1] if text.endswith("'") else text
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
