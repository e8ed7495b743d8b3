"""Comments a tool filled in from a template, recognised by their shape across pull requests.

Some review tools post through a person's account and leave no stamp (bot.review_tools needs one):
"Please provide return type hint for the function: `foo`" on every PR of a repository, with only
the name changed. A model trained on them learns the tool, not the team. What gives them away is
the data as a whole, not one comment: the same words, in the same order, on many pull requests,
with a slot whose value changes almost every time.

The method (a log-template miner's, applied to review comments):
1. A comment is cut into paragraphs (blank lines), and each paragraph into tokens: words
   (lower-cased), punctuation runs, and placeholders for what a tool fills in whole (a code span
   or block, a URL, a path, a number, a quoted string, an identifier-shaped word such as
   ``snake_case``, ``camelCase``, ``a.b`` or ``f()``). A placeholder keeps its raw text as the value.
2. Paragraphs of the same token count are grouped greedily: one joins a group when it differs from
   the group's first paragraph in at most ``max_slot_share`` of the positions (the slots).
3. A group is a template when it spans ``min_prs`` pull requests or more, keeps at least
   ``min_literal_words`` fixed words, and its slots vary: the filled-in values take at least
   ``min_fill_share`` as many distinct forms as it has pull requests (a tool names a different
   identifier each time; a person who says "this" and "that" repeats the same few fills). A group whose paragraphs
   are all the same text is canned text when it is long (``canned_words`` words or more): a short
   phrase a reviewer repeats verbatim ("Can you add a test for this?") is a habit of the team's,
   kept on purpose.
4. A comment is templated when its templated paragraphs hold ``min_coverage`` of its words: a
   person's own note appended to a tool's line keeps the comment.

Thresholds, with what they were set against (crc-py, 823 comments of 55 repositories; tests on
synthetic cases of each kind):
* ``min_prs`` 5: a tool fires on every PR it runs on; the smallest template group in crc-py spans 6
  PRs. Below 5, a reviewer asking the same question on a few PRs of one week looks the same.
* ``max_slot_share`` 0.25: a template's fixed part is most of it (1 to 3 slots in 9 to 40 tokens in
  crc-py); a looser share starts joining unrelated human sentences of the same length.
* ``min_literal_words`` 5 and ``min_fill_share`` 0.5 (at least 3 distinct fills): a shorter fixed
  part, or fills that repeat, is how people talk ("Same here: see above", "Can we test this/that?").
* ``canned_words`` 15: a pasted paragraph of that length on 5 PRs is not a code review remark.
* ``min_coverage`` 2/3: a tool's lines with one paragraph it could not be matched on (a file name
  with a space in it) still count as the tool's.

Pure: texts and keys in, verdicts out. Used by dataset import (bot.datasets) and GitHub harvest
(harvest.filters), each with a flag to keep what it finds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

# Placeholders, in the order they are tried (a fenced block before its backticks, a URL before a path).
_MASKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("<code>", re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.S)),
    ("<url>", re.compile(r"\bhttps?://[^\s)>\]]+|\bwww\.[^\s)>\]]+")),
    ("<str>", re.compile(r"\"[^\"\n]{1,60}\"|(?<!\w)'[^'\n]{1,60}'(?!\w)")),
    (
        "<path>",
        re.compile(
            r"(?<![\w/])(?:[\w.\-]+/)+[\w.\-]*|\b[\w\-]+\.(?:py|pyi|js|ts|tsx|jsx|java|go|rs|rb|c|h|cc|cpp|"
            r"hpp|cs|kt|md|rst|txt|yml|yaml|toml|json|cfg|ini|sh|html|css)\b"
        ),
    ),
    (
        "<id>",
        re.compile(
            r"\b[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+(?:\(\))?|\b[A-Za-z_]\w*\(\)|\b_\w*|\b\w+_\w*"
            r"|\b[a-z]+[A-Z]\w*|\b[A-Z]\w*[a-z][A-Z]\w*|\b(?=\w*\d)(?=\w*[A-Za-z])\w+"
        ),
    ),
    ("<num>", re.compile(r"\b\d+(?:[.,]\d+)*\b")),
)
_HIDDEN = 0xF0000  # placeholders travel through the tokenizer as one private-use character each
_TOKEN = re.compile(r"([\U000F0000-\U000FFFFD])|[^\W\d_]+(?:'[^\W\d_]+)?|[^\w\s]+|\w+")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class TemplateConfig:
    """The thresholds (the module docstring says why each is what it is)."""

    min_prs: int = 5
    max_slot_share: float = 0.25
    min_literal_words: int = 5
    min_fill_share: float = 0.5
    min_fills: int = 3
    canned_words: int = 15
    min_coverage: float = 2 / 3
    min_paragraph_words: int = 3  # shorter paragraphs ("Thanks!") neither make nor break a verdict

    def max_slots(self, length: int) -> int:
        return max(1, int(length * self.max_slot_share))


@dataclass(frozen=True)
class Paragraph:
    """One paragraph as tokens: ``shape`` is what must match for two paragraphs to share a template
    (words, punctuation, placeholder kinds), ``values`` the raw text at each position."""

    shape: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def words(self) -> int:
        return sum(1 for s in self.shape if s[:1].isalpha())


def tokenize(paragraph: str) -> Paragraph:
    """A paragraph's tokens with the parts a tool fills in replaced by placeholders."""
    found: list[tuple[str, str]] = []
    text = paragraph
    for kind, pattern in _MASKS:

        def keep(m: re.Match[str], kind: str = kind) -> str:
            found.append((kind, m.group(0)))
            return f" {chr(_HIDDEN + len(found) - 1)} "

        text = pattern.sub(keep, text)
    shape: list[str] = []
    values: list[str] = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            kind, raw = found[ord(m.group(1)) - _HIDDEN]
            shape.append(kind)
            values.append(raw)
        else:
            token = m.group(0)
            shape.append(token.lower())
            values.append(token)
    return Paragraph(tuple(shape), tuple(values))


def paragraphs(body: str) -> list[Paragraph]:
    """A comment's paragraphs (split on blank lines outside code blocks), tokenised."""
    blocks: list[str] = []
    fenced = False
    current: list[str] = []
    for part in _PARAGRAPH.split(body.replace("\r\n", "\n")):
        current.append(part)
        fenced ^= part.count("```") % 2 == 1
        if not fenced:
            blocks.append("\n\n".join(current))
            current = []
    if current:
        blocks.append("\n\n".join(current))
    return [p for p in (tokenize(b) for b in blocks) if p.shape]


@dataclass
class _Group:
    founder: Paragraph
    slots: set[int] = field(default_factory=set)
    members: list[tuple[int, int]] = field(default_factory=list)  # (comment index, paragraph index)
    keys: set[Hashable] = field(default_factory=set)
    texts: set[tuple[str, ...]] = field(default_factory=set)


@dataclass(frozen=True)
class Template:
    """A template found in the data: its fixed words with ``…`` at the slots, how many pull
    requests and paragraphs it covers, and how many distinct fills it took."""

    skeleton: str
    prs: int
    paragraphs: int
    fills: int
    canned: bool = False


@dataclass
class TemplateReport:
    """Per comment: the Template it was filled from (its largest templated paragraph's) or None."""

    verdicts: list[Template | None]
    templates: list[Template]

    @property
    def templated(self) -> int:
        return sum(1 for v in self.verdicts if v is not None)


def _skeleton(group: _Group) -> str:
    out: list[str] = []
    for i, token in enumerate(group.founder.shape):
        piece = "…" if i in group.slots or token.startswith("<") else token
        if not (piece == "…" and out and out[-1] == "…"):
            out.append(piece)
    text = re.sub(r" (?=[.,:;!?)\]])|(?<=[(\[]) ", "", " ".join(out))
    return text[:100]


def _groups(items: Sequence[tuple[Hashable, list[Paragraph]]], config: TemplateConfig) -> list[_Group]:
    """Greedy grouping. A paragraph can only join a group whose founder agrees with it on all but
    ``max_slots`` positions, so (pigeonhole) on at least one of ``max_slots + 1`` disjoint position
    classes it agrees entirely: founders are indexed by those classes, and a paragraph looks only at
    the founders that share one with it."""
    groups: list[_Group] = []
    index: dict[tuple[int, int, tuple[str, ...]], list[int]] = defaultdict(list)
    for c, (key, paras) in enumerate(items):
        for p, para in enumerate(paras):
            if para.words < config.min_paragraph_words:
                continue
            n = len(para.shape)
            k = config.max_slots(n) + 1
            classes = [tuple(para.shape[i] for i in range(j, n, k)) for j in range(k)]
            chosen = None
            for g in sorted({g for j in range(k) for g in index.get((n, j, classes[j]), [])}):
                group = groups[g]
                diff = {i for i, (a, b) in enumerate(zip(group.founder.shape, para.shape)) if a != b}
                if len(diff | group.slots) <= k - 1:
                    chosen = group
                    group.slots |= diff
                    break
            if chosen is None:
                chosen = _Group(para)
                groups.append(chosen)
                for j in range(k):
                    index[(n, j, classes[j])].append(len(groups) - 1)
            chosen.members.append((c, p))
            chosen.keys.add(key)
            chosen.texts.add(para.values)
    return groups


def _template(group: _Group, paras: dict[tuple[int, int], Paragraph], config: TemplateConfig) -> Template | None:
    if len(group.keys) < config.min_prs:
        return None
    founder = group.founder
    literal = sum(1 for i, s in enumerate(founder.shape) if i not in group.slots and s[:1].isalpha())
    if literal < config.min_literal_words:
        return None
    variable = [i for i, s in enumerate(founder.shape) if i in group.slots or s.startswith("<")]
    fills = {tuple(paras[m].values[i].lower() for i in variable) for m in group.members}
    if len(group.texts) == 1 or len(fills) == 1:
        canned = founder.words >= config.canned_words
        if not canned:
            return None
        return Template(_skeleton(group), len(group.keys), len(group.members), len(fills), canned=True)
    if len(fills) < max(config.min_fills, config.min_fill_share * len(group.keys)):
        return None
    return Template(_skeleton(group), len(group.keys), len(group.members), len(fills))


def find_templates(items: Sequence[tuple[Hashable, str]], config: TemplateConfig | None = None) -> TemplateReport:
    """``items``: (pull-request key, comment body) for every comment of the data, in a stable order
    (the key says which comments share a pull request: ``(repo, pr)``). Returns a verdict per item."""
    config = config or TemplateConfig()
    parsed = [(key, paragraphs(body or "")) for key, body in items]
    groups = _groups(parsed, config)
    paras = {(c, p): para for c, (_, ps) in enumerate(parsed) for p, para in enumerate(ps)}
    found: dict[tuple[int, int], Template] = {}
    templates: list[Template] = []
    for group in groups:
        template = _template(group, paras, config)
        if template is not None:
            templates.append(template)
            for member in group.members:
                found[member] = template
    verdicts: list[Template | None] = []
    for c, (_, ps) in enumerate(parsed):
        words = sum(p.words for p in ps)
        hits = [(ps[p].words, t) for p, _ in enumerate(ps) if (t := found.get((c, p))) is not None]
        covered = sum(w for w, _ in hits)
        verdicts.append(max(hits, key=lambda h: h[0])[1] if hits and covered >= config.min_coverage * words else None)
    templates.sort(key=lambda t: -t.paragraphs)
    return TemplateReport(verdicts, templates)
