"""The one base class of errors a user can fix.

The command line prints such an error as one `error: ...` line and exits non-zero; any other
exception is a bug and shows its traceback (always, with `--debug` or REPORTGEN_DEBUG=1).
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input or a fixable situation; the message names the input and what to do."""
