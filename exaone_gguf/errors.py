"""The project's error types. The CLI maps them to exit codes (../shared/DESIGN.md)."""


class InputError(Exception):
    """Bad input or usage: one sentence naming the file and what is wrong. Exit code 2."""


class ValidationFailed(Exception):
    """Validation ran and the model failed a check. Exit code 1."""
