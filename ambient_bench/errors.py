"""The one exception type that means "the user's input is wrong"."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (config typo, unknown component, missing file).

    The CLI prints ``str(err)`` as a single line and exits with code 2. The message must
    name the offending key or file and say how to fix it.
    """

    exit_code = 2
