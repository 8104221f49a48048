"""Exceptions that survey-seg raises for problems a user can fix.

Every message names the problem and the fix in one line; the command-line
interface prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

__all__ = ["InputError", "OutputError", "SurveySegError"]


class SurveySegError(Exception):
    """Base class of the errors a user can act on."""


class InputError(SurveySegError, ValueError):
    """The input (a mosaic, a region, a parameter) is unusable as given."""


class OutputError(SurveySegError, OSError):
    """The output directory cannot be used (exists, unwritable, locked)."""
