"""The one exception type for errors a user can cause and fix."""


class EdgepruneError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do.

    The CLI prints it as one line and exits with code 2, without a traceback.
    """
