"""The one exception type a user sees: a message naming the file, field or row at fault.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from embedforge.redact import redact


class EmbedforgeError(Exception):
    """Bad input or an unmet precondition, explained in the user's terms.

    The message is redacted as it is made: it becomes error lines, state messages and log records, all of which
    leave the process, and it may quote a URL with a password or an endpoint's reply echoing a key.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


# Every character str.splitlines() breaks on: a user's value quoted in a message must not split its line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """A message on one line, whatever the value it quotes: line breaks written as escapes (\\n, \\r)."""
    return text.translate(_LINE_BREAKS)


def did_you_mean(word: str, choices) -> str:
    """' — did you mean <closest>?' for a misspelt name, or '' when nothing is close: every suggestion reads alike."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" — did you mean {close[0]}?" if close else ""
