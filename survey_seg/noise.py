"""Correlated noise: how much noisier the sky is on the scale of the PSF than its pixels say.

Resampled, drizzled and co-added images (HST drizzle, SWarp co-adds, SDSS
reprojections) have noise that is correlated between neighbouring pixels: the
per-pixel variance is right, but a sum over a PSF-sized patch is noisier than
the variance of independent pixels predicts, so a detector that trusts the
per-pixel variance finds sources in the noise (on a 1024² image of pure noise
correlated by a 3x3 drizzle-like kernel, the network found 3,366; on white noise
of the same per-pixel variance, none). The ratio measured here, the standard
deviation of the S/N image smoothed by a unit-norm Gaussian of the PSF's width
over its value for white noise (1), is what the per-pixel variance is scaled by
(squared) for detection, as SExtractor users scale their weight maps (Casertano
et al. 2000 give the same correction for drizzled images).

This module computes only: it imports neither torch nor any I/O.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from survey_seg.psf import SIGMA_PER_FWHM

__all__ = [
    "MIN_SKY_PIXELS",
    "gaussian_kernel_norm",
    "image_noise_correlation",
    "noise_correlation_ratio",
]

MIN_SKY_PIXELS = 2000
"""Fewer sky pixels than this measure nothing: the ratio is 1."""
_SOURCE_SNR = 4.0  # pixels above this |S/N| (grown) are sources, not sky
_SOURCE_GROW = 3  # pixels a source mask is grown by
_SIGMA_PER_MAD = 1.4826


def noise_correlation_ratio(snr: np.ndarray, usable: np.ndarray, kernel_sigma_pix: float) -> float:
    """Noise of the S/N image on the PSF's scale, over what white noise would give.

    The S/N image is smoothed by a Gaussian of ``kernel_sigma_pix`` normalised to
    unit quadratic sum (white noise of unit variance stays of unit variance).
    Sources and unusable pixels, grown, are left out, and so is every smoothed
    pixel whose kernel reaches one (0.5 % of its weight); the robust standard
    deviation (1.4826 MAD) of the smoothed values that remain is the ratio.

    Parameters
    ----------
    snr : numpy.ndarray
        Background-subtracted image over its per-pixel noise.
    usable : numpy.ndarray
        Boolean: pixels with data (and no flag).
    kernel_sigma_pix : float
        Gaussian sigma of the PSF (pix), at least 0.5.

    Returns
    -------
    float
        1 for white noise, above 1 for positively correlated noise (or a variance
        plane that underestimates the noise); 1.0 when fewer than
        :data:`MIN_SKY_PIXELS` sky pixels remain.
    """
    if not kernel_sigma_pix > 0:
        raise ValueError(f"kernel_sigma_pix={kernel_sigma_pix!r}; give the PSF sigma in pixels")
    sigma = max(float(kernel_sigma_pix), 0.5)
    snr = np.asarray(snr, dtype=np.float64)
    source = ~usable | ~np.isfinite(snr) | (np.abs(np.nan_to_num(snr)) > _SOURCE_SNR)
    source = ndimage.binary_dilation(source, iterations=_SOURCE_GROW)
    sky = np.where(source, 0.0, np.nan_to_num(snr))
    smoothed = ndimage.gaussian_filter(sky, sigma, truncate=4.0)
    reach = ndimage.gaussian_filter(source.astype(np.float64), sigma, truncate=4.0)
    clean = reach < 0.005
    if np.count_nonzero(clean) < MIN_SKY_PIXELS:
        return 1.0
    values = smoothed[clean] / gaussian_kernel_norm(sigma)
    return float(_SIGMA_PER_MAD * np.median(np.abs(values - np.median(values))))


def image_noise_correlation(
    image: np.ndarray,
    variance: np.ndarray,
    background: np.ndarray,
    psf_fwhm_pix: float,
    usable: np.ndarray | None = None,
) -> float:
    """:func:`noise_correlation_ratio` of an image, on the scale of its PSF.

    Parameters
    ----------
    image, variance, background : numpy.ndarray
        The pixels, their per-pixel variance and the sky under them.
    psf_fwhm_pix : float
        PSF FWHM (pix): the kernel's width.
    usable : numpy.ndarray, optional
        Boolean: pixels to use besides those with finite pixels and a positive
        variance (an input mask's unflagged pixels).

    Returns
    -------
    float
        The ratio (1 for white noise).
    """
    image = np.asarray(image, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    if usable is not None:
        good &= usable
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(good, (image - background) / np.sqrt(variance), 0.0)
    sigma = psf_fwhm_pix * SIGMA_PER_FWHM
    return noise_correlation_ratio(snr, good, sigma)


def gaussian_kernel_norm(sigma: float) -> float:
    """Quadratic norm of ``ndimage.gaussian_filter(..., sigma, truncate=4)``.

    The standard deviation of unit white noise once smoothed: dividing a smoothed
    S/N image by it gives a map of unit noise (a matched-filter significance).
    """
    half = int(4.0 * sigma + 0.5)
    impulse = np.zeros((2 * half + 1, 2 * half + 1))
    impulse[half, half] = 1.0
    return float(np.sqrt(np.sum(ndimage.gaussian_filter(impulse, sigma, truncate=4.0) ** 2)))
