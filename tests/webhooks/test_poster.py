"""Pieces of the poster that need no running service."""

from __future__ import annotations

from webhook_kit import REPO, TOKEN, make_seed

from bot.errors import GitHubError
from bot.review import Review, ReviewComment, Skipped
from revbot.dev.github_sim import GitHubSimulator
from webhooks.poster import ReviewPoster, read_pull_diff


class TooLargeToRender:
    """A GitHub client whose PR diff is "too large" (406), like GitHub's for huge PRs."""

    def __init__(self, real):
        self.real = real

    def pull_diff(self, repo, number):
        raise GitHubError("the diff is too large", 406)

    def pull_files(self, repo, number):
        return self.real.pull_files(repo, number)


def test_a_diff_too_large_to_render_is_rebuilt_from_the_files_api():
    from adapters.github import GitHubClient

    files = [
        {"filename": "a.py", "status": "modified", "patch": "@@ -1,2 +1,2 @@\n-x = 1\n+x = 2\n y"},
        {"filename": "logo.png", "status": "added", "patch": None, "binary": True},
        {"filename": "new.py", "status": "renamed", "previous_filename": "old.py", "patch": None},
    ]
    with GitHubSimulator(make_seed(files)) as sim:
        gh = GitHubClient(TOKEN, api_url=sim.url)
        rendered = read_pull_diff(gh, REPO, 1, "pr")
        rebuilt = read_pull_diff(TooLargeToRender(gh), REPO, 1, "pr")
    assert [f.path for f in rebuilt] == [f.path for f in rendered] == ["a.py", "logo.png", "new.py"]
    assert rebuilt.file("a.py").anchors == rendered.file("a.py").anchors
    assert rebuilt.file("logo.png").is_binary and not rebuilt.file("new.py").is_binary
    assert rebuilt.file("new.py").old_path == "old.py"


def test_a_saved_plan_round_trips():
    review = Review(
        comments=[ReviewComment("a.py", 3, "RIGHT", "Use a constant.", None, "x = 2", 3)],
        unanchored=[ReviewComment("a.py", 99, "RIGHT", "Changelog?")],
        skipped=[Skipped("logo.png", "binary file", (), 0)],
        source="pr",
        files_total=2,
        files_reviewed=1,
        hunks_total=1,
        hunks_reviewed=1,
        prompts=1,
        duplicates_dropped=1,
    )
    again = Review.from_dict(review.to_dict())
    assert again.to_dict() == review.to_dict()
    assert again.summary == review.summary


def test_refused_comments_move_to_the_body():
    comments = [ReviewComment("a.py", n, "RIGHT", f"comment {n}", None, f"line {n}", n) for n in range(1, 5)]
    review = Review(comments=list(comments))
    moved, count = ReviewPoster._without_refused(review, set(), [1, 3], everything=False)
    assert count == 2 and [c.line for c in moved.comments] == [1, 3] and [c.line for c in moved.unanchored] == [2, 4]
    all_moved, count = ReviewPoster._without_refused(review, set(), None, everything=False)
    assert count == 4 and all_moved.comments == [] and len(all_moved.unanchored) == 4
