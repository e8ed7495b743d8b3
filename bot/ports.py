"""What the domain needs from the world, as structural types (``typing.Protocol``).

``bot/`` never imports an adapter: the review pipeline takes any object that has a ``Backend``'s
methods (``adapters.model`` has two, tests pass doubles) and ``bot.feedback`` any ``FeedbackStore``
(the SQLite ``adapters.store.Store``). Prompt rendering takes any ``bot.prompt.Tokenizer`` (a
transformers tokenizer), declared beside the prompt contract so that it needs nothing from here.
``Backend`` and ``FeedbackStore`` are runtime-checkable, so a test can ask whether an adapter still
offers what the domain calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.config import DEFAULT_MAX_NEW_TOKENS
from bot.json_types import JSONObject

if TYPE_CHECKING:
    from bot.prompt import PromptInput
    from bot.records import BotPost, Evidence, Feedback, StoredComment


class Answer(Protocol):
    """One generated answer (``adapters.model.Generation``): the text before the end marker,
    the tokens it took, and "stop" or "length" (cut off by ``max_new_tokens``)."""

    @property
    def text(self) -> str: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def finish_reason(self) -> str: ...


@runtime_checkable
class Backend(Protocol):
    """A model that answers prompts: what ``bot.review`` calls to review a diff. ``max_context``:
    tokens the model takes, prompt and answer together. A backend may also have
    ``count_prompt_tokens(PromptInput) -> int`` (the exact cost of a prompt with its template);
    without it the plain text is counted."""

    @property
    def max_context(self) -> int: ...

    def generate(
        self, inputs: list[PromptInput], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> Sequence[Answer | str]:
        """One answer per input, in input order (a plain string is an answer without token counts)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def describe(self) -> JSONObject:
        """What is being served, for reports; never holds a secret."""
        ...


@runtime_checkable
class FeedbackStore(Protocol):
    """What ``bot.feedback`` reads and writes: the bot's posts, the feedback on them, the stored
    comment a post became, and the evidence derived from it all."""

    def get_comment(self, comment_id: int, forge: str = "github") -> StoredComment | None:
        """The stored comment ``comment_id`` of ``forge`` (each forge numbers its comments itself)."""
        ...

    def iter_posts(self, repo: str | None = None, pr: int | None = None) -> Iterable[BotPost]: ...

    def iter_feedback(self, repo: str | None = None) -> Iterable[Feedback]: ...

    def replace_evidence(self, items: Iterable[Evidence], *, repo: str | None = None, pr: int | None = None) -> int:
        """Replace the stored evidence (all of it, one repo's, or one PR's) with ``items``; how many rows."""
        ...
