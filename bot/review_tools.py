"""Comments written by AI review tools, recognised by the stamp each tool puts on its comments.

Imported datasets carry no author, and some teams run such tools through a personal token, so the
account type alone misses them: dataset import (bot.datasets) and harvest (harvest.filters) both
drop what these patterns match, so a team's model learns the team, not another tool. ("bot" in revbot
means its own account; these are other tools.)
"""

from __future__ import annotations

import re

# Each pattern is a tool's own markup (a badge image, a hidden marker, a fixed footer), not a topic:
# a human who mentions a tool by name is not matched.
REVIEW_TOOL_STAMPS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.I | re.M))
    for name, pattern in (
        ("gemini-code-assist", r"!\[(?:critical|high|medium|low)\]\(https://www\.gstatic\.com/codereviewagent/"),
        ("korbit", r"<sub>!\[category [^\]]*\]\(https://img\.shields\.io/badge/"),
        ("korbit", r"<summary>Tell me more</summary>\s*(?:&#8203;)?\s*#{3,6} What is the issue\?"),
        ("coderabbit", r"<!-- This is an auto-generated (?:comment|reply) by CodeRabbit"),
        ("coderabbit", r"^_(?:⚠️ Potential issue|🛠️ Refactor suggestion|💡 Verification agent|🧹 Nitpick)"),
        ("coderabbit", r"<summary>🤖 Prompt for AI Agents</summary>"),
        # Sourcery tags a conventional-comment label with its own categories; the bare label
        # ("**question:**") is a human convention (conventionalcomments.org) and stays.
        (
            "sourcery",
            r"^\*\*(?:suggestion|issue|nitpick) \((?:bug_risk|security|performance|typo|testing|"
            r"code-quality|complexity|docstring|llm)[a-z_, -]*\):\*\* ",
        ),
        ("ellipsis", r"Generated with :heart: by \[ellipsis\.dev\]"),
        ("pr-agent", r"\[importance: \d+\]\s*$"),
        ("feedback-footer", r"React with 👍 or 👎 to (?:let us know|help)"),
        ("revbot", r"<!-- revbot:(?:fp|review)"),
    )
)


def review_tool_stamp(body: str | None) -> str | None:
    """The AI review tool whose stamp ``body`` carries, or None for a comment that looks human."""
    text = body or ""
    for name, pattern in REVIEW_TOOL_STAMPS:
        if pattern.search(text):
            return name
    return None
