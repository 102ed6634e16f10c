"""The one error type users see: the CLI prints its message as a single line and exits 2."""


class TinydsError(Exception):
    """A problem with the user's input; the message names the file, the layer and the fix."""


# The fix for integer params no kernel can run (accumulators or shifts out of range).
EXTREME_MODEL = ("the model's weights, BatchNorm statistics or activation ranges are extreme; "
                 "fix or retrain the model")


# Optional Python packages (top-level module -> what installs it), so a command that
# needs one it lacks says so in one line (cli.main) instead of a traceback.
OPTIONAL_PACKAGES = {
    "elftools": "pip install 'tinyds[firmware]'",
    "capstone": "pip install 'tinyds[firmware]'",
    "flatbuffers": "pip install 'tinyds[tflite]'",
    "tflite_micro": "pip install 'tinyds[tflite]'",
    "ai_edge_litert": "pip install 'tinyds[tflite]'",
    "ar": "pip install 'tinyds[micropython]'",
    "mpremote": "pip install mpremote",
}


def install_hint(module: str | None) -> str | None:
    """How to install the optional package that provides `module` (None: not optional)."""
    return OPTIONAL_PACKAGES.get((module or "").split(".")[0])
