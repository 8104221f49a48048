"""Screening methods by name: the value of ``--method``."""

from __future__ import annotations

from survey_seg.config import DEFAULT_METHOD, METHOD_NAMES, PRECISIONS
from survey_seg.errors import InputError
from survey_seg.screen import ScreeningMethod

__all__ = ["DEFAULT_METHOD", "METHOD_NAMES", "PRECISIONS", "make_method"]


def make_method(
    name: str,
    *,
    model: str | None = None,
    precision: str = "auto",
    flips: int | None = None,
    psf_fwhm_pix: float | None = None,
) -> ScreeningMethod:
    """Build the screening method called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`METHOD_NAMES`.
    model : str, optional
        Model config file of a network method (default: the shipped weights).
    precision : str
        Arithmetic of a network method: ``auto``, ``float32`` or ``bfloat16``.
    flips : int, optional
        Test-time flips of a network method: 1, 2 or 4 passes per window
        (default: the model config's).
    psf_fwhm_pix : float, optional
        PSF FWHM of the mosaic (pixels), for which a method picks its thresholds
        (the network's tuned thresholds, both methods' cosmic-ray sharpness limit).

    Returns
    -------
    ScreeningMethod

    Raises
    ------
    InputError
        For an unknown name, or a network option given to a method without one.
    """
    if name not in METHOD_NAMES:
        raise InputError(f"unknown method {name!r}; use one of {', '.join(METHOD_NAMES)}")
    if name == "unet":
        from survey_seg.network import NetworkScreener

        options = {"precision": precision, "flips": flips, "psf_fwhm_pix": psf_fwhm_pix}
        return NetworkScreener(model, **options) if model else NetworkScreener(**options)
    for option, value in (("--model", model), ("--flips", flips)):
        if value is not None:
            raise InputError(f"{option} applies to the unet method, not {name!r}; drop it")
    from survey_seg.classical import ClassicalScreener

    return ClassicalScreener(psf_fwhm_pix=psf_fwhm_pix)
