"""The one error type of the data layer: missing, bad or too little data, with the fix in its message."""


class DataError(ValueError):
    """Missing, stale, corrupted or insufficient data; the message names the fix."""
