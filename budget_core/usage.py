"""Token counts as an immutable value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one API call, one instance or one budget.

    ``input`` excludes the cache buckets, as in the Messages API; ``total`` adds all four,
    which is what a token budget counts.
    """

    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input + other.input,
            self.output + other.output,
            self.cache_creation + other.cache_creation,
            self.cache_read + other.cache_read,
        )

    def __sub__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input - other.input,
            self.output - other.output,
            self.cache_creation - other.cache_creation,
            self.cache_read - other.cache_read,
        )

    def __bool__(self) -> bool:
        return bool(self.input or self.output or self.cache_creation or self.cache_read)

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_creation": self.cache_creation,
            "cache_read": self.cache_read,
            "total": self.total,
        }


ZERO = TokenUsage()
