"""Screening methods by name: the value of ``--method``."""

from __future__ import annotations

from survey_seg.errors import InputError
from survey_seg.screen import ScreeningMethod

__all__ = ["DEFAULT_METHOD", "METHOD_NAMES", "PRECISIONS", "make_method"]

METHOD_NAMES = ("unet", "classical")
DEFAULT_METHOD = "unet"
PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of ``--precision``: ``auto`` is bfloat16 where the device computes it
natively (CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX), else float32."""


def make_method(name: str, *, model: str | None = None, precision: str = "auto") -> ScreeningMethod:
    """Build the screening method called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`METHOD_NAMES`.
    model : str, optional
        Model config file of a network method (default: the shipped weights).
    precision : str
        Arithmetic of a network method: ``auto``, ``float32`` or ``bfloat16``.

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
    if name == "unet":
        from survey_seg.network import NetworkScreener

        if model:
            return NetworkScreener(model, precision=precision)
        return NetworkScreener(precision=precision)
    if model:
        raise InputError(f"--model applies to the unet method, not {name!r}")
    raise InputError(f"unknown method {name!r}; use one of {', '.join(METHOD_NAMES)}")
