"""Screening methods by name: the value of ``--method``."""

from __future__ import annotations

from survey_seg.errors import InputError
from survey_seg.screen import ScreeningMethod

__all__ = ["DEFAULT_METHOD", "METHOD_NAMES", "make_method"]

METHOD_NAMES = ("classical",)
DEFAULT_METHOD = "classical"


def make_method(name: str) -> ScreeningMethod:
    """Build the screening method called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`METHOD_NAMES`.

    Returns
    -------
    ScreeningMethod

    Raises
    ------
    InputError
        For an unknown name.
    """
    if name == "classical":
        from survey_seg.classical import ClassicalScreener

        return ClassicalScreener()
    raise InputError(f"unknown method {name!r}; use one of {', '.join(METHOD_NAMES)}")
