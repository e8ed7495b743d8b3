"""A deterministic generator for the demo's sample project: ``acme/stockroom``, a small invented
inventory and billing service with a few months of merged pull requests and their human reviews.

Why generated rather than a hand-written JSON file: a few hundred review comments with consistent
hunks, line numbers and ``diff_hunk`` excerpts are easy to get wrong by hand and hard to review;
a seeded generator keeps them right by construction and small enough to read.

What the history contains, so that every step of the demo has something to show:
- the team's habits (``templates.STYLE``): the same kind of code always draws the same comment,
  on the line that shows it; hunks without a habit are left alone (negative examples);
- a CI bot account whose comments harvest must drop, a PR author commenting on their own PR,
  "LGTM"/"+1" comments, reply threads, a comment the team voted down with 👎, and one hunk with a
  hard-coded API key that harvest must scrub before storing anything.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from revbot.dev.demo_data.templates import (
    CLEAN_TEMPLATES,
    HABIT_TEMPLATES,
    MODULES,
    SLOT_HABIT,
    STYLE,
    TEMPLATES,
    render,
    slot_lines,
)

REPO = "acme/stockroom"
DEFAULT_BRANCH = "main"
REVIEWERS = ["maria-k", "devon-r", "priya-s"]
AUTHORS = ["lee-j", "sam-o", "tomasz-w", "maria-k", "devon-r", "priya-s"]
CI_BOT = "stockroom-ci[bot]"
DEMO_AUTHOR = "lee-j"
START = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)

REVBOT_YML = """\
# revbot settings for acme/stockroom. revbot reads this file from the base branch only,
# so a pull request cannot change how it is reviewed.
enabled: true
max_comments: 10
max_comments_per_file: 4
skip_drafts: true
ignore_paths:
  - "docs/**"
  - "migrations/**"
"""

README = """\
# stockroom

Inventory, orders and billing for the Acme warehouses. (An invented project: the sample history
that `revbot demo` learns from.)
"""

SECRET_LINE = 'STRIPE_API_KEY = "sk_live_51Hx9demoDEMOdemo0000aBcDeFgH"'
SECRET_COMMENT = "Read secrets from the environment; never commit them."
TRIVIAL = ["LGTM", "+1", "Thanks!", "\U0001f44d", "lgtm \U0001f680", "nice"]
SELF_NOTES = [
    "Note to reviewers: this keeps the old behaviour on purpose.",
    "I will split this into a helper in a follow-up.",
    "Self-review: double-checked the numbers against production.",
]
BOT_NOTES = [
    "Coverage: the new lines here are not covered by tests.",
    "Static analysis: function is longer than the configured limit.",
]
REPLIES = ["Done, thanks.", "Good catch, fixed in the next commit.", "Updated.", "Fixed."]
DISLIKED = [
    "Rename this to qty, shorter names read better.",
    "Put this on one line, it is easier to scan.",
]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(*parts: object) -> str:
    return hashlib.sha1(":".join(str(p) for p in parts).encode()).hexdigest()


@dataclass
class SampleHunk:
    header: str
    lines: list[tuple[str, str]]  # (kind, text); kind in "+- "
    habits: dict[int, str]  # new-file line number -> habit shown there
    new_numbers: list[int | None]  # new-file number of each line (None for deleted lines)

    def text(self) -> str:
        return "\n".join([self.header, *(kind + text for kind, text in self.lines)])

    def diff_hunk_until(self, new_line: int) -> str:
        """GitHub's ``diff_hunk`` of a comment: the hunk from its header down to the commented line."""
        end = self.new_numbers.index(new_line)
        return "\n".join([self.header, *(kind + text for kind, text in self.lines[: end + 1])])

    def added_lines(self) -> list[int]:
        return [n for (kind, _), n in zip(self.lines, self.new_numbers) if kind == "+" and n is not None]


@dataclass
class SampleFile:
    filename: str
    status: str
    hunks: list[SampleHunk]

    @property
    def patch(self) -> str:
        return "\n".join(h.text() for h in self.hunks)

    @property
    def additions(self) -> int:
        return sum(1 for h in self.hunks for kind, _ in h.lines if kind == "+")

    @property
    def deletions(self) -> int:
        return sum(1 for h in self.hunks for kind, _ in h.lines if kind == "-")


@dataclass
class SampleComment:
    id: int
    path: str
    line: int
    body: str
    user: str
    created_at: str
    diff_hunk: str
    kind: str  # style | secret | bot | self | trivial | reply | disliked
    side: str = "RIGHT"
    user_type: str = "User"
    in_reply_to_id: int | None = None
    reactions: dict[str, int] = field(default_factory=dict)
    review_id: int | None = None


@dataclass
class SamplePull:
    number: int
    title: str
    author: str
    created_at: str
    merged_at: str | None
    files: list[SampleFile]
    comments: list[SampleComment] = field(default_factory=list)
    body: str = ""

    @property
    def head_sha(self) -> str:
        return _sha(REPO, self.number, "head")

    @property
    def base_sha(self) -> str:
        return _sha(REPO, self.number, "base")

    @property
    def head_ref(self) -> str:
        return f"pr-{self.number}"


@dataclass
class SampleProject:
    repo: str
    default_branch: str
    base_files: dict[str, str]
    pulls: list[SamplePull]

    def comments(self) -> list[SampleComment]:
        return [c for p in self.pulls for c in p.comments]

    def counts(self) -> dict[str, int]:
        """How many comments of each kind, and habits shown, the history holds (for docs and tests)."""
        out: dict[str, int] = {"pulls": len(self.pulls), "comments": len(self.comments())}
        for c in self.comments():
            out[f"kind:{c.kind}"] = out.get(f"kind:{c.kind}", 0) + 1
        for p in self.pulls:
            for f in p.files:
                for h in f.hunks:
                    out["hunks"] = out.get("hunks", 0) + 1
                    for habit in h.habits.values():
                        out[f"habit:{habit}"] = out.get(f"habit:{habit}", 0) + 1
        return out


# --------------------------------------------------------------------------- hunks

_BEFORE = [
    ["    return result", "", ""],
    ["        raise", "", ""],
    ["    return True", "", ""],
    ["", ""],
    ["    return None", "", ""],
]
_AFTER = [["", ""], [""], []]
MAX_HUNK_LINES = 12
# nouns for the enclosing-function line of hunks in modules the history never touched
_SECTION_NOUNS = {"stockroom/returns.py": ["return_label"]}


def _section_for(rng: random.Random, module: str, avoid: str) -> str:
    """A plausible enclosing-function line for a hunk header (git shows the nearest ``def`` above)."""
    nouns = MODULES.get(module) or _SECTION_NOUNS.get(module) or ["record"]
    while True:
        line = render(TEMPLATES[rng.choice(["list", "get", "create"])], rng.choice(nouns), set(), rng).lines[0]
        if line != avoid:
            return line


def build_hunk(
    rng: random.Random,
    module: str,
    template: str,
    noun: str,
    active: set[int],
    old_pos: int,
    delta: int,
    mode: str,
) -> tuple[SampleHunk, int, int]:
    """One hunk of ``module`` at old-file line ``old_pos`` (or just below); returns (hunk, the old-file
    line after it, the new-minus-old line offset after it).

    ``mode`` "new" adds a whole function after a little context; "edit" changes the lines of an
    existing function that hold the active habits, leaving the rest as context.
    """
    rendered = render(TEMPLATES[template], noun, active, rng)
    body = rendered.lines
    if mode == "new":
        old_pos = max(old_pos, 4)  # a new function goes below an existing one
    lines: list[tuple[str, str]] = []
    habit_at: list[str | None] = []
    if mode == "new":
        before = rng.choice(_BEFORE)
        after = rng.choice(_AFTER)[: max(0, MAX_HUNK_LINES - len(body) - 1)]
        before = before[max(0, len(before) + len(body) + len(after) - MAX_HUNK_LINES) :] or before[-1:]
        for text in before:
            lines.append((" ", text))
            habit_at.append(None)
        for text, habit in zip(body, rendered.habits):
            lines.append(("+", text))
            habit_at.append(habit)
        for text in after:
            lines.append((" ", text))
            habit_at.append(None)
        section = _section_for(rng, module, body[0])
    else:
        marked = sorted(active) or [rng.randrange(len(body))]
        # most edits touch just the lines that changed; some take a neighbour along
        first = max(0, min(marked) - (rng.random() < 0.3))
        last = min(len(body), max(marked) + 1 + (rng.random() < 0.3))
        if first == 0 and last == len(body) and len(body) > 2:
            first = 1 if 0 not in marked else 0
        replaced = first == 1 and rng.random() < 0.4  # the body of what used to be a stub
        for i, (text, habit) in enumerate(zip(body, rendered.habits)):
            if first <= i < last:
                if replaced and i == first:  # the function used to be a stub
                    indent = text[: len(text) - len(text.lstrip())] or "    "
                    lines.append(("-", indent + "raise NotImplementedError"))
                    habit_at.append(None)
                lines.append(("+", text))
                habit_at.append(habit)
            else:
                lines.append((" ", text))
                habit_at.append(None)
        section = body[0] if not lines[0][1].startswith(("def ", "class ")) else _section_for(rng, module, body[0])
        section = "" if section == body[0] and first == 0 else section
    old_len = sum(1 for kind, _ in lines if kind in "- ")
    new_len = sum(1 for kind, _ in lines if kind in "+ ")
    new_start = old_pos + delta
    numbers: list[int | None] = []
    habits: dict[int, str] = {}
    number = new_start
    for (kind, _), habit in zip(lines, habit_at):
        if kind == "-":
            numbers.append(None)
            continue
        numbers.append(number)
        if habit:
            habits[number] = habit
        number += 1
    if old_pos == 1:
        section = ""  # git names the enclosing function only when there are lines above the hunk
    header = f"@@ -{old_pos},{old_len} +{new_start},{new_len} @@" + (f" {section}" if section else "")
    return SampleHunk(header, lines, habits, numbers), old_pos + old_len, delta + new_len - old_len


def _slot_kind(template: str, index: int) -> str:
    return TEMPLATES[template][index].split("<<", 1)[1].split("|", 1)[0].rstrip(">")


def _habit_slots() -> dict[str, list[tuple[str, int]]]:
    """habit -> every (template, slot line) that can show it."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name in HABIT_TEMPLATES:
        for index in slot_lines(TEMPLATES[name]):
            out.setdefault(SLOT_HABIT[_slot_kind(name, index)], []).append((name, index))
    return out


def _mode(rng: random.Random, habit: bool) -> str:
    """Most of the team's flagged lines are small edits to existing functions, a few come with a new
    function; clean hunks are either."""
    return "edit" if rng.random() < (0.8 if habit else 0.5) else "new"


def build_file(rng: random.Random, module: str, specs: list[tuple[str, str, set[int], str]]) -> SampleFile:
    """A modified file with one hunk per (template, noun, active slots, mode) spec, top to bottom."""
    hunks = []
    old_pos = rng.randint(1, 4)
    delta = 0
    for template, noun, active, mode in specs:
        hunk, end, delta = build_hunk(rng, module, template, noun, active, old_pos, delta, mode)
        hunks.append(hunk)
        old_pos = end + rng.randint(1, 3)
    return SampleFile(module, "modified", hunks)


# --------------------------------------------------------------------------- the history


class _Ids:
    def __init__(self) -> None:
        self.comment = 1_840_000_100
        self.review = 2_210_000_100

    def next_comment(self) -> int:
        self.comment += 1
        return self.comment

    def next_review(self) -> int:
        self.review += 1
        return self.review


def _habit_plan(rng: random.Random, n_hunks: int, habit_share: float, cycle: list[str]) -> list[tuple[str, set[int]]]:
    """Template and active slots of each hunk. Habits are drawn in shuffled rounds (``cycle`` carries
    over between calls) so that every habit is about equally frequent; a fifth of the habit hunks
    show a second habit."""
    slots = _habit_slots()
    plan = []
    for _ in range(n_hunks):
        if rng.random() >= habit_share:
            plan.append((rng.choice(CLEAN_TEMPLATES + HABIT_TEMPLATES), set()))  # habit templates, rendered clean
            continue
        if not cycle:
            cycle.extend(sorted(slots))
            rng.shuffle(cycle)
        template, index = rng.choice(slots[cycle.pop()])
        active = {index}
        others = [i for i in slot_lines(TEMPLATES[template]) if i != index]
        if others and rng.random() < 0.2:
            active.add(rng.choice(others))
        plan.append((template, active))
    return plan


def build_sample_project(seed: int = 7, n_pulls: int = 60, habit_share: float = 0.35) -> SampleProject:
    """The whole merged history, deterministic for a given seed."""
    rng = random.Random(seed)
    ids = _Ids()
    pulls: list[SamplePull] = []
    moment = START
    module_names = list(MODULES)
    cycle: list[str] = []
    # PR numbers that carry each kind of noise (chosen once, deterministically)
    picks = rng.sample(range(1, n_pulls + 1), 20)
    bot_prs, self_prs, trivial_prs = set(picks[:6]), set(picks[6:9]), set(picks[9:15])
    reply_prs, disliked_prs, secret_pr = set(picks[15:18]), set(picks[18:20]), picks[0]
    for number in range(1, n_pulls + 1):
        moment += timedelta(days=2, hours=rng.randint(0, 30))
        author = rng.choice(AUTHORS)
        reviewers = [r for r in REVIEWERS if r != author]
        n_files = rng.choice([2, 3, 3, 4, 4])
        modules = rng.sample(module_names, n_files)
        files = []
        for module in modules:
            n_hunks = rng.choice([1, 1, 1, 1, 1, 1, 2, 2, 2, 3])
            specs = [
                (name, rng.choice(MODULES[module]), active, _mode(rng, bool(active)))
                for name, active in _habit_plan(rng, n_hunks, habit_share, cycle)
            ]
            files.append(build_file(rng, module, specs))
        if number == secret_pr:
            files.append(_secret_file(rng))
        title = _title(rng, files)
        pull = SamplePull(number, title, author, _iso(moment), None, files, body=f"{title}.")
        when = moment + timedelta(hours=rng.randint(2, 20))
        review_of = {r: ids.next_review() for r in reviewers}
        for f in files:
            for h in f.hunks:
                for line, habit in sorted(h.habits.items()):
                    who = rng.choice(reviewers)
                    when += timedelta(minutes=rng.randint(3, 90))
                    body = SECRET_COMMENT if habit == "secret" else STYLE[habit]
                    pull.comments.append(
                        SampleComment(
                            ids.next_comment(),
                            f.filename,
                            line,
                            body,
                            who,
                            _iso(when),
                            h.diff_hunk_until(line),
                            "secret" if habit == "secret" else "style",
                            reactions={"+1": rng.randint(0, 2)},
                            review_id=review_of[who],
                        )
                    )
        _add_noise(rng, ids, pull, reviewers, when, bot_prs, self_prs, trivial_prs, reply_prs, disliked_prs)
        last = max(
            [moment]
            + [datetime.strptime(c.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for c in pull.comments]
        )
        pull.merged_at = _iso(last + timedelta(hours=rng.randint(1, 6)))
        pulls.append(pull)
    base_files = {".revbot.yml": REVBOT_YML, "README.md": README, "stockroom/__init__.py": '"""Stockroom."""\n'}
    return SampleProject(REPO, DEFAULT_BRANCH, base_files, pulls)


def _secret_file(rng: random.Random) -> SampleFile:
    old = rng.randint(10, 20)
    lines = [
        (" ", 'DATABASE_URL = os.environ["DATABASE_URL"]'),
        (" ", "CACHE_TTL = 300"),
        ("+", SECRET_LINE),
        ("+", 'STRIPE_ENDPOINT = "https://api.stripe.example/v1"'),
        (" ", ""),
    ]
    numbers = [old, old + 1, old + 2, old + 3, old + 4]
    header = f"@@ -{old},3 +{old},5 @@"
    return SampleFile("stockroom/settings.py", "modified", [SampleHunk(header, lines, {old + 2: "secret"}, numbers)])


def _title(rng: random.Random, files: list[SampleFile]) -> str:
    area = files[0].filename.split("/")[-1].removesuffix(".py")
    verb = rng.choice(["Add", "Improve", "Refactor", "Fix", "Extend", "Clean up"])
    return f"{verb} {area} handling" + (f" and {len(files) - 1} more" if len(files) > 1 else "")


def _add_noise(rng, ids, pull, reviewers, when, bot_prs, self_prs, trivial_prs, reply_prs, disliked_prs) -> None:
    """Comments every harvest filter must see: bots, self-comments, trivia, replies, voted down."""
    hunk_lines = [(f.filename, h, n) for f in pull.files for h in f.hunks for n in h.added_lines() if n not in h.habits]
    if not hunk_lines:
        return

    def add(kind: str, body: str, user: str, user_type: str = "User", **extra) -> SampleComment:
        nonlocal when
        path, hunk, line = rng.choice(hunk_lines)
        when += timedelta(minutes=rng.randint(5, 120))
        comment = SampleComment(
            ids.next_comment(),
            path,
            line,
            body,
            user,
            _iso(when),
            hunk.diff_hunk_until(line),
            kind,
            user_type=user_type,
            **extra,
        )
        pull.comments.append(comment)
        return comment

    n = pull.number
    if n in bot_prs:
        add("bot", rng.choice(BOT_NOTES), CI_BOT, "Bot")
    if n in self_prs:
        add("self", rng.choice(SELF_NOTES), pull.author)
    if n in trivial_prs:
        add("trivial", rng.choice(TRIVIAL), rng.choice(reviewers))
    if n in disliked_prs:
        add("disliked", rng.choice(DISLIKED), rng.choice(reviewers), reactions={"+1": 0, "-1": 3})
    if n in reply_prs:
        roots = [c for c in pull.comments if c.kind == "style"]
        if roots:
            root = rng.choice(roots)
            when += timedelta(minutes=rng.randint(10, 200))
            pull.comments.append(
                SampleComment(
                    ids.next_comment(),
                    root.path,
                    root.line,
                    rng.choice(REPLIES),
                    pull.author,
                    _iso(when),
                    root.diff_hunk,
                    "reply",
                    in_reply_to_id=root.id,
                )
            )


# --------------------------------------------------------------------------- the demo's new PR

# (module, [(template, noun, habits to show by slot kind, mode)]) — nouns the history never used
DEMO_PULL_SPEC = [
    ("stockroom/returns.py", [("create", "return_request", {"mutdef", "log"}, "edit")]),
    ("stockroom/billing.py", [("parse", "credit_note", {"except"}, "edit")]),
    ("stockroom/shipping.py", [("poll", "pickup", {"sleep"}, "edit")]),
    ("stockroom/pricing.py", [("message", "voucher", {"pct"}, "edit")]),
    ("stockroom/customers.py", [("list", "loyalty_card", set(), "new")]),
    ("stockroom/orders.py", [("count", "backorder", set(), "new")]),
]


def build_demo_pull(project: SampleProject, seed: int = 11) -> SamplePull:
    """The pull request the demo opens at the end: several habits the team flags, and clean code."""
    rng = random.Random(seed)
    files = []
    for module, specs in DEMO_PULL_SPEC:
        resolved = []
        for template, noun, kinds, mode in specs:
            lines = TEMPLATES[template]
            active = {i for i in slot_lines(lines) if _slot_kind(template, i) in kinds}
            resolved.append((template, noun, active, mode))
        files.append(build_file(rng, module, resolved))
    number = len(project.pulls) + 1
    created = datetime.strptime(project.pulls[-1].merged_at or project.pulls[-1].created_at, "%Y-%m-%dT%H:%M:%SZ")
    created = created.replace(tzinfo=UTC) + timedelta(days=1)
    return SamplePull(
        number,
        "Add returns and credit notes",
        DEMO_AUTHOR,
        _iso(created),
        None,
        files,
        body="Customers can now return items; billing issues credit notes for them.",
    )


def habits_in(pull: SamplePull) -> list[tuple[str, int, str]]:
    """(path, line, habit) the team would flag in ``pull``: the answer key for the demo's review."""
    return [(f.filename, line, habit) for f in pull.files for h in f.hunks for line, habit in sorted(h.habits.items())]


# --------------------------------------------------------------------------- simulator seed


def _comment_seed(c: SampleComment, pull: SamplePull) -> dict:
    spec = {
        "id": c.id,
        "path": c.path,
        "line": c.line,
        "side": c.side,
        "body": c.body,
        "user": {"login": c.user, "type": c.user_type},
        "created_at": c.created_at,
        "commit_id": pull.head_sha,
        "diff_hunk": c.diff_hunk,
    }
    if c.in_reply_to_id is not None:
        spec["in_reply_to_id"] = c.in_reply_to_id
    if c.reactions:
        spec["reactions"] = dict(c.reactions)
    if c.review_id is not None:
        spec["pull_request_review_id"] = c.review_id
    return spec


def pull_files_seed(pull: SamplePull) -> list[dict]:
    return [{"filename": f.filename, "status": f.status, "patch": f.patch} for f in pull.files]


def to_seed(project: SampleProject, tokens: list[dict] | None = None) -> dict:
    """The project in the GitHub simulator's seed format (``revbot.dev.github_sim`` module docstring)."""
    pulls = []
    for p in project.pulls:
        reviews = {}
        for c in p.comments:
            if c.review_id is not None and c.review_id not in reviews:
                reviews[c.review_id] = {
                    "id": c.review_id,
                    "user": c.user,
                    "state": "COMMENTED",
                    "body": "",
                    "submitted_at": c.created_at,
                }
        pulls.append(
            {
                "number": p.number,
                "title": p.title,
                "body": p.body,
                "user": p.author,
                "state": "closed",
                "merged": True,
                "merged_at": p.merged_at,
                "closed_at": p.merged_at,
                "created_at": p.created_at,
                "updated_at": p.merged_at,
                "base": project.default_branch,
                "head": p.head_ref,
                "head_sha": p.head_sha,
                "base_sha": p.base_sha,
                "files": pull_files_seed(p),
                "reviews": list(reviews.values()),
                "comments": [_comment_seed(c, p) for c in p.comments],
            }
        )
    owner, name = project.repo.split("/")
    seed: dict = {
        "repos": [
            {
                "owner": owner,
                "name": name,
                "owner_type": "Organization",
                "default_branch": project.default_branch,
                "description": "Inventory, orders and billing (revbot demo sample)",
                "created_at": _iso(START),
                "files": {project.default_branch: dict(project.base_files)},
                "pulls": pulls,
            }
        ]
    }
    if tokens:
        seed["tokens"] = tokens
    return seed
