"""The one error type users see: the CLI prints its message as a single line and exits 2."""


class TinydsError(Exception):
    """A problem with the user's input; the message names the file, the layer and the fix."""
