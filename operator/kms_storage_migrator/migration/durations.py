"""Duration strings of the spec ("90s", "10m", "1h30m"): the subset both Go and CEL accept. Pure."""

from __future__ import annotations

import re
from typing import Final

_DURATION: Final = re.compile(r"^(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?$")


class DurationError(ValueError):
    """Not a duration this operator reads; the message names the field."""


def parse_duration(field: str, text: object, *, minimum: float, maximum: float) -> float:
    """Seconds in ``text``; hours, minutes and seconds in that order, whole numbers only."""
    match = _DURATION.match(text) if isinstance(text, str) and text else None
    if match is None:
        raise DurationError(
            f"{field}: {text!r} is not a duration; write whole hours, minutes and seconds like "
            "'90s', '10m' or '1h30m'"
        )
    seconds = 3600.0 * int(match["h"] or 0) + 60.0 * int(match["m"] or 0) + float(match["s"] or 0)
    if not minimum <= seconds <= maximum:
        raise DurationError(
            f"{field}: {text!r} is out of range; use from {minimum:.0f} s to {maximum / 3600:.0f} h"
        )
    return seconds
