"""Provider keys kept out of what clients see: one rule for every relayed byte and message.

A provider may echo its key back (in an error message, or a model may be made to repeat it).
The gateway removes it, but only a key that can be a secret, and only where the removal cannot
damage an answer:

- the key is at least `MIN_SECRET_LENGTH` (12) characters with a Shannon entropy of at least
  `MIN_SECRET_ENTROPY` (3.0) bits per character. Dummy keys given to local servers ("x", "k",
  "EMPTY", "ollama", "lm-studio") are not secrets and are never scrubbed, so "Six experts ...
  box" arrives intact;
- an occurrence is replaced only on token boundaries: not preceded or followed by a letter,
  digit, `_` or `-` (a key inside a longer word is not that key);
- the replacement, `[redacted]`, holds no JSON-special character, and a key of that strength
  never spells JSON or SSE structure (field names, event names, punctuation), so the scrub
  lands inside a JSON string value and never changes an event's structure.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

MIN_SECRET_LENGTH = 12
MIN_SECRET_ENTROPY = 3.0  # bits per character
REDACTED = "[redacted]"
_WORD = r"A-Za-z0-9_\-"


@lru_cache(maxsize=256)  # a pure function of the key, asked once per streamed request
def is_secret(key: str | None) -> bool:
    """Whether `key` is long and random enough to be a credential worth scrubbing."""
    if not key or len(key) < MIN_SECRET_LENGTH:
        return False
    counts = Counter(key)
    size = len(key)
    entropy = -sum(n / size * math.log2(n / size) for n in counts.values())
    return entropy >= MIN_SECRET_ENTROPY


@lru_cache(maxsize=256)  # a pure function of the key: compiled once per provider key
def _patterns(key: str) -> tuple[re.Pattern[str], re.Pattern[bytes]] | None:
    if not is_secret(key):
        return None
    text = rf"(?<![{_WORD}]){re.escape(key)}(?![{_WORD}])"
    return re.compile(text), re.compile(text.encode())


def scrub_text(key: str | None, message: str) -> str:
    """`message` with every whole-token occurrence of a secret `key` replaced."""
    if not key or key not in message:
        return message
    patterns = _patterns(key)
    return message if patterns is None else patterns[0].sub(REDACTED, message)


def scrub_bytes(key: str | None, data: bytes) -> bytes:
    """Relayed bytes with every whole-token occurrence of a secret `key` replaced.

    Costs one substring search when the key is absent (the usual case)."""
    if not key or key.encode() not in data:
        return data
    patterns = _patterns(key)
    return data if patterns is None else patterns[1].sub(REDACTED.encode(), data)
