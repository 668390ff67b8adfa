"""The one exception type a user sees: a message naming the file, field or row at fault.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class EmbedforgeError(Exception):
    """Bad input or an unmet precondition, explained in the user's terms."""
