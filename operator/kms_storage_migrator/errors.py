"""Errors that reach a person: one line, naming the thing at fault and what to do."""


class UserError(Exception):
    """A problem the user can fix (bad input, unreachable endpoint, missing binary).

    The CLI prints the message alone, without a traceback, and exits with ``exit_code``.
    """

    exit_code = 2
