"""Errors a user fixes, not a programmer: told in one line, without a traceback.

A damaged intermediate file or an input that cannot be used raises an :class:`InputError`
whose message names the file, what is wrong and how to fix it. A workflow job's log
(:func:`layerwise.logs.to_file`) prints such an error as that one line; any other exception
keeps its traceback, since it is a bug to report.
"""

from __future__ import annotations


class InputError(ValueError):
    """An input the user must fix or rebuild; the message is the whole story."""
