"""The one error type of the data layer: missing, bad or too little data, with the fix in its message."""

from lengthgen.errors import UserError


class DataError(UserError, ValueError):
    """Missing, stale, corrupted or insufficient data; the message names the fix (a user error: exit 2)."""
