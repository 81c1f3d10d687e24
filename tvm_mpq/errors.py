"""User-facing errors: one line that names the problem, never a deep TVM traceback."""


class MpqError(Exception):
    """An error caused by the user's input (file, option, config, model); printed as one line."""
