"""The one exception type for errors a user can cause and fix."""


class EdgepruneError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do.

    The CLI prints it as one line and exits with code 2, without a traceback.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), or its type's name:
    what a one-line error quotes of a library's exception."""
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__
