"""All file I/O: FITS mosaics in, Zarr stores and per-tile results out.

This is the only module that opens FITS or Zarr paths. It validates a FITS
mosaic before anything is written, ingests it into a sharded Zarr store (one
shard per tile core), reads a tile with its halo, writes a tile's core into the
output arrays, and keeps the per-tile records from which the manifest is built.

Layout of an output directory ``OUT/``::

    mosaic.zarr/      ingested input: image, variance and input_mask (optional),
                      background mesh
    masks.zarr/       mask (uint32 planes), segmentation (int64 global ids)
    masks.fits        the same arrays as FITS images with the WCS (MASK, SEGMENT, QUALITY)
    tiles/            per-tile results: NNNNNN.sources.parquet, NNNNNN.clumps.parquet,
                      NNNNNN.json (the tile's record, written last)
    sources.parquet, clumps.parquet, tiles.parquet, *.fits, manifest.json
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import socket
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import zarr
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from survey_seg import __version__
from survey_seg.background import BackgroundMesh, cell_statistics, finish_mesh
from survey_seg.catalog import CATALOGS, SURVEY_COLUMNS, Column, table_columns
from survey_seg.errors import InputError, OutputError
from survey_seg.files import atomic_output, atomic_write_bytes
from survey_seg.masks import MASK_DTYPE, describe_bits
from survey_seg.psf import Cutout, PSFEstimate, estimate_psf_cutouts, region_boxes, region_grid
from survey_seg.tiling import Tile

__all__ = [
    "MASKS_FITS",
    "MASK_EXTNAMES",
    "NOISE_CONVENTIONS",
    "NOISE_EXTNAMES",
    "OUTPUT_ERRNOS",
    "PSF_FWHM_KEY",
    "PSF_MEASURED",
    "ZERO_POINT_KEYS",
    "InputPlane",
    "MosaicInfo",
    "MosaicStore",
    "OutputStore",
    "WindowData",
    "acquire_run_lock",
    "atomic_write_bytes",
    "check_lock_held_by",
    "check_no_links",
    "check_run_lock",
    "described_table",
    "file_sha256",
    "ingest_mosaic",
    "inspect_fits_mosaic",
    "is_output_failure",
    "measure_mosaic_psf",
    "output_failures",
    "release_run_lock",
    "resolve_mosaic_psf",
    "wcs_from_attrs",
    "wcs_to_attrs",
]

VARIANCE_EXTNAMES = ("VARIANCE", "VAR")
WEIGHT_EXTNAMES = ("WEIGHT", "WHT", "WGT", "IVAR", "INVVAR")
RMS_EXTNAMES = ("ERR", "RMS", "SIGMA")
NOISE_EXTNAMES: dict[str, str] = {
    **dict.fromkeys(VARIANCE_EXTNAMES, "variance"),
    **dict.fromkeys(WEIGHT_EXTNAMES, "weight"),
    **dict.fromkeys(RMS_EXTNAMES, "rms"),
}
"""``EXTNAME`` of a noise plane and its kind: HST and JWST ``ERR``, DES ``WGT``,
drizzle ``WHT``, ``VARIANCE`` ... The first such HDU of a mosaic is its noise plane."""
MASK_EXTNAMES = ("DQ", "MSK", "MASK", "FLAG", "FLAGS", "BPM")
"""``EXTNAME`` of an input bad-pixel mask (HST and JWST ``DQ``, DES ``MSK``, Euclid
``FLAG``): integers, a non-zero pixel is bad."""
NOISE_CONVENTIONS = {
    "variance": "variance",
    "weight": "inverse variance: variance = 1 / weight; weight 0: no data",
    "rms": "sigma: variance = rms**2",
}
"""What the values of each kind of noise plane are."""
MASK_CONVENTION = "integer; non-zero: BAD (excluded from detection and measurement)"
SEPARATE_FILE_OPTIONS = {"weight": "--weight", "rms": "--rms", "mask": "--mask"}
"""Option of each separate noise or mask file (the keywords of inspect_fits_mosaic)."""
PSF_FWHM_KEY = "PSFFWHM"
PSF_MEASURED = "measured"
"""The ``source`` of a PSF record measured on the mosaic's stars (its fit beside it)."""
ZERO_POINT_KEYS = ("MAGZERO", "MAGZP", "PHOTZP", "MAGZPT", "ZEROPT")
"""Header keywords of the magnitude zero point (``mag = ZP - 2.5 log10(flux)``), the
first one present wins: SWarp's and this project's, then 2MASS's and ZTF's, the ESO
Phase 3 standard's, and two older spellings."""
NOISE_CUTOUT = 1024
"""Side of the central cutout on which the noise correlation is measured at ingest."""
NOISE_KERNEL_FWHM_PIX = 1.8
"""PSF FWHM of the noise-correlation kernel when the mosaic's PSF is unknown."""
COUNT_UNITS = frozenset({"adu", "dn", "count", "counts", "ct", "cts"})
"""``BUNIT`` values (lower case) of images in raw counts, to which ``GAIN`` applies."""
"""Header keyword of the mosaic's PSF full width at half maximum, in pixels."""
PSF_CUTOUT = 1024
"""Side of the cutout read at the centre of each region of the mosaic to measure the
PSF; a mosaic of at most 3 of them along each axis is read whole."""
MOSAIC_STORE = "mosaic.zarr"
MASKS_STORE = "masks.zarr"
MASKS_FITS = "masks.fits"
TILES_DIR = "tiles"
MANIFEST = "manifest.json"
RUN_LOCK = "run.lock"
REPORT_HTML = "report.html"
REPORT_DIR = "report"


# --------------------------------------------------------------------------- FITS input


@dataclass(frozen=True)
class InputPlane:
    """Where a noise or mask plane of a mosaic is read from.

    Attributes
    ----------
    path : pathlib.Path
        The FITS file holding it: the mosaic, or a separate file (``--weight``,
        ``--rms``, ``--mask``).
    hdu : int
        Index of its HDU in that file.
    kind : str
        Noise: ``"variance"``, ``"weight"`` (inverse variance) or ``"rms"`` (sigma);
        ``"mask"``: integers, non-zero where a pixel is bad.
    extname : str
        ``EXTNAME`` of the HDU ("" when it has none).
    sha256 : str or None
        Checksum of a separate file; None when the plane is an HDU of the mosaic.
    """

    path: Path
    hdu: int
    kind: str
    extname: str = ""
    sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        """Source, convention (and checksum of a separate file), for the manifest."""
        name = f" ({self.extname})" if self.extname else ""
        if self.sha256 is None:
            record: dict[str, Any] = {"source": f"HDU {self.hdu}{name} of the mosaic"}
        else:
            record = {"source": f"file {self.path}, HDU {self.hdu}{name}", "sha256": self.sha256}
        if self.kind == "mask":
            return {**record, "convention": MASK_CONVENTION}
        return {**record, "kind": self.kind, "convention": NOISE_CONVENTIONS[self.kind]}


@dataclass(frozen=True)
class MosaicInfo:
    """What a validated FITS mosaic holds, without its pixels.

    Attributes
    ----------
    path : pathlib.Path
        The FITS file.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the image (mosaic pixel coordinates, 0-based).
    image_hdu : int
        Index of the image HDU.
    saturation : float or None
        ``SATURATE`` keyword: pixels at or above it are saturated.
    zero_point : float or None
        Magnitude zero point from the header (:data:`ZERO_POINT_KEYS`):
        ``mag = zero_point - 2.5 log10(flux)``.
    pixel_scale_arcsec : float
        Pixel scale from the WCS.
    psf_fwhm_pix : float or None
        PSF full width at half maximum (pixels); the network method picks its
        thresholds for it. From :func:`inspect_fits_mosaic`, the ``PSFFWHM``
        keyword; :func:`resolve_mosaic_psf` makes it the value a run uses.
    sha256 : str
        Checksum of the input, for provenance and resume checks: of the file, or,
        when a noise or mask plane comes from a separate file, of the checksums of
        every file and the kind of the noise file (a changed weight file changes it).
    flux_unit : str or None
        ``BUNIT`` keyword: the unit of the pixel values, hence of the catalogs' fluxes
        (None: not given; the fluxes are then in the image's own counts, ``adu``).
    noise : InputPlane or None
        The noise plane: an HDU of the mosaic, or a separate file; None: the noise
        is estimated from the pixels (background mesh RMS).
    mask : InputPlane or None
        The input bad-pixel mask, if any.
    image_extname : str
        ``EXTNAME`` of the image HDU ("" when it has none).
    file_sha256 : str
        Checksum of the mosaic file itself (``sha256`` without separate files).
    psf : dict or None
        Where ``psf_fwhm_pix`` comes from: ``{"fwhm_pix": ..., "source": ...}`` with
        source ``--psf-fwhm``, ``PSFFWHM`` or ``measured`` (then with the fit of
        :meth:`survey_seg.psf.PSFEstimate.to_record`: beta, ellipticity, n_stars,
        regions ...), or ``none`` (too few stars: ``fwhm_pix`` None); None: not
        resolved yet and no keyword.
    gain : float or None
        ``GAIN`` keyword (electrons per count of the raw image): the Poisson noise of
        injected objects where the pixels are counts (see :attr:`counts_gain`).
    zero_point_key : str or None
        The keyword ``zero_point`` was read from.
    """

    path: Path
    shape: tuple[int, int]
    wcs: WCS
    image_hdu: int
    saturation: float | None
    zero_point: float | None
    pixel_scale_arcsec: float
    psf_fwhm_pix: float | None
    sha256: str
    flux_unit: str | None = None
    noise: InputPlane | None = None
    mask: InputPlane | None = None
    image_extname: str = ""
    file_sha256: str = ""
    psf: dict[str, Any] | None = None
    gain: float | None = None
    zero_point_key: str | None = None

    @property
    def counts_gain(self) -> float | None:
        """``gain`` when the pixels are counts (``BUNIT`` absent or a count unit), else None.

        A calibrated image (``nanomaggy``, ``MJy/sr``, ``e/s`` ...) keeps the ``GAIN``
        of its raw frames, which does not convert its pixel values to electrons.
        """
        unit = (self.flux_unit or "adu").strip().lower()
        return self.gain if unit in COUNT_UNITS else None

    @property
    def noise_hdu(self) -> int | None:
        """Index of the noise HDU in its file (``noise.path``), if any."""
        return None if self.noise is None else self.noise.hdu

    @property
    def noise_kind(self) -> str:
        """``"variance"``, ``"weight"`` (inverse variance), ``"rms"`` (sigma) or ``"none"``."""
        return "none" if self.noise is None else self.noise.kind

    def describe_planes(self) -> dict[str, dict[str, Any]]:
        """Where the image, noise and mask come from and how they are read (manifest).

        Returns
        -------
        dict
            ``{"image": ..., "noise": ..., "mask": ...}``, each with its ``source``
            (``"HDU 2 (ERR) of the mosaic"``, ``"file PATH, HDU 0"``), noise and mask
            with their ``convention``, separate files with their ``sha256``.
        """
        name = f" ({self.image_extname})" if self.image_extname else ""
        image = {"source": f"HDU {self.image_hdu}{name} of the mosaic", "sha256": self.file_sha256}
        noise = (
            self.noise.describe()
            if self.noise is not None
            else {"source": "estimated from the pixels (background mesh RMS)", "kind": "none"}
        )
        mask = self.mask.describe() if self.mask is not None else {"source": "none"}
        return {"image": image, "noise": noise, "mask": mask}


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def inspect_fits_mosaic(
    path: str | os.PathLike,
    *,
    weight: str | os.PathLike | None = None,
    rms: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
) -> MosaicInfo:
    """Validate a FITS mosaic (and its separate noise and mask files), reading every pixel once.

    The planes are found by ``EXTNAME``:

    - image: the first HDU named ``SCI``, else the first image HDU that is not a
      noise or mask plane (the primary HDU of a plain FITS image);
    - noise, the first of: ``VARIANCE``/``VAR`` (variance), ``WEIGHT``/``WHT``/
      ``WGT``/``IVAR``/``INVVAR`` (weight: inverse variance, 0 where there is no
      data, as SWarp and DES write it) or ``ERR``/``RMS``/``SIGMA`` (sigma:
      variance = rms²); none: the noise is estimated from the pixels;
    - mask: ``DQ``/``MSK``/``MASK``/``FLAG``/``FLAGS``/``BPM``, integers, non-zero
      where a pixel is bad (every non-zero bit counts).

    So HST and JWST (``SCI``, ``ERR``, ``DQ``) and DES coadds (``SCI``, ``MSK``,
    ``WGT``) are read as written. A separate file (its first HDU with pixels)
    replaces the mosaic's own plane: a SWarp ``.weight.fits`` is a ``weight``, a
    Euclid MER ``RMS`` file an ``rms``, its ``FLAG`` file a ``mask``.

    Parameters
    ----------
    path : str or path-like
        FITS file with a 2-D image HDU carrying a celestial WCS.
    weight, rms : str or path-like, optional
        A separate noise file of the image's shape, in inverse variance (``weight``)
        or sigma (``rms``); at most one of them.
    mask : str or path-like, optional
        A separate integer bad-pixel mask of the image's shape.

    Returns
    -------
    MosaicInfo

    Raises
    ------
    InputError
        One line naming the problem and the fix: missing file, not FITS,
        truncated, no image HDU, not 2-D, empty, no finite pixel, no or a
        malformed WCS, a noise or mask plane of another shape, a mask that does
        not hold integers, both ``weight`` and ``rms``.
    """
    path = Path(path)
    if weight is not None and rms is not None:
        raise InputError("--weight and --rms both give the noise of the mosaic; pass one of them")
    if not path.exists():
        raise InputError(f"mosaic {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"mosaic {path} is a directory; pass a FITS file")
    separate = {
        role: Path(file)
        for role, file in (("weight", weight), ("rms", rms), ("mask", mask))
        if file is not None
    }
    for role, file in separate.items():
        what = f"{role} file {file} ({SEPARATE_FILE_OPTIONS[role]})"
        if not file.exists():
            raise InputError(f"{what} does not exist; check the path")
        if file.is_dir():
            raise InputError(f"{what} is a directory; pass a FITS file")
    noise = mask_plane = None
    with _read_errors_as_input_error(str(path)), _open_fits(path) as hdus:
        image_hdu = _find_image_hdu(hdus, path)
        header = hdus[image_hdu].header
        shape = _checked_shape(hdus[image_hdu], image_hdu, path)
        image = _hdu_data(hdus[image_hdu], path)
        n_finite = int(np.count_nonzero(np.isfinite(image)))
        if n_finite == 0:
            raise InputError(
                f"{path} HDU {image_hdu} has no finite pixel (all NaN or inf); "
                "check that the right file and HDU were written"
            )
        wcs = _celestial_wcs(header, path, image_hdu)
        image_extname = _extname(hdus[image_hdu])
        if weight is None and rms is None:
            noise = _find_plane_hdu(hdus, image_hdu, shape, path, NOISE_EXTNAMES)
        if mask is None:
            mask_kinds = dict.fromkeys(MASK_EXTNAMES, "mask")
            mask_plane = _find_plane_hdu(hdus, image_hdu, shape, path, mask_kinds)
        psf_fwhm_pix = _psf_fwhm(header, path, image_hdu)
        if noise is not None:
            _hdu_data(hdus[noise.hdu], path)  # reads it: catches truncation now
        if mask_plane is not None:
            where = f"{path} {mask_plane.extname} HDU"
            _check_mask_values(_hdu_data(hdus[mask_plane.hdu], path), where)
    for role, file in separate.items():
        plane = _separate_plane(file, role, shape)
        if role == "mask":
            mask_plane = plane
        else:
            noise = plane
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)
    own_sha256 = file_sha256(path)
    zero_point, zero_point_key = _zero_point(header)
    return MosaicInfo(
        path=path,
        shape=shape,
        wcs=wcs,
        image_hdu=image_hdu,
        saturation=_optional_float(header, "SATURATE"),
        zero_point=zero_point,
        pixel_scale_arcsec=scale,
        psf_fwhm_pix=psf_fwhm_pix,
        sha256=_input_sha256(own_sha256, noise, mask_plane),
        flux_unit=_optional_string(header, "BUNIT"),
        noise=noise,
        mask=mask_plane,
        image_extname=image_extname,
        file_sha256=own_sha256,
        psf=None if psf_fwhm_pix is None else {"fwhm_pix": psf_fwhm_pix, "source": PSF_FWHM_KEY},
        gain=_optional_positive(header, "GAIN"),
        zero_point_key=zero_point_key,
    )


def resolve_mosaic_psf(info: MosaicInfo, psf_fwhm: float | None = None) -> MosaicInfo:
    """The mosaic with the PSF FWHM a run uses, and where it comes from.

    In order: ``psf_fwhm`` (``--psf-fwhm``), the ``PSFFWHM`` keyword, the FWHM
    measured on the mosaic's stars (:func:`measure_mosaic_psf`); with too few
    stars, none (``psf_fwhm_pix`` None: a network method takes the thresholds of
    its training PSF).

    Parameters
    ----------
    info : MosaicInfo
        From :func:`inspect_fits_mosaic`.
    psf_fwhm : float, optional
        The FWHM given for the run (pixels, validated by the config).

    Returns
    -------
    MosaicInfo
        With ``psf_fwhm_pix`` and its ``psf`` record.
    """
    if psf_fwhm is not None:
        record: dict[str, Any] = {"fwhm_pix": float(psf_fwhm), "source": "--psf-fwhm"}
    elif info.psf is not None and info.psf.get("source") == PSF_FWHM_KEY:
        return info
    else:
        estimate = measure_mosaic_psf(info)
        source = PSF_MEASURED if estimate.usable else "none"
        record = {"fwhm_pix": estimate.fwhm_pix, "source": source, **estimate.to_record()}
    return replace(info, psf_fwhm_pix=record["fwhm_pix"], psf=record)


def measure_mosaic_psf(info: MosaicInfo) -> PSFEstimate:
    """Measure the PSF of a validated mosaic on its stars (:mod:`survey_seg.psf`).

    A mosaic of at most ``3 PSF_CUTOUT`` pixels along each axis is read whole;
    a larger one as a cutout of ``PSF_CUTOUT`` x ``PSF_CUTOUT`` at the centre of
    each region of :func:`survey_seg.psf.region_grid`, with its noise and mask
    planes: a few seconds at most, whatever the mosaic's size.

    Parameters
    ----------
    info : MosaicInfo
        From :func:`inspect_fits_mosaic`.

    Returns
    -------
    PSFEstimate
        Not usable with too few isolated stars.
    """
    ny, nx = info.shape
    if ny <= 3 * PSF_CUTOUT and nx <= 3 * PSF_CUTOUT:
        windows = [(0, ny, 0, nx)]
    else:
        windows = []
        for _, _, (y0, y1, x0, x1) in region_boxes(info.shape, region_grid(info.shape)):
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            h, w = min(PSF_CUTOUT, y1 - y0), min(PSF_CUTOUT, x1 - x0)
            windows.append((cy - h // 2, cy - h // 2 + h, cx - w // 2, cx - w // 2 + w))
    cutouts = []
    with _read_errors_as_input_error(str(info.path)), contextlib.ExitStack() as files:
        hdus = files.enter_context(_open_fits(info.path))
        image_data = hdus[info.image_hdu].data
        noise_data = _plane_data(info.noise, hdus, files)
        mask_data = _plane_data(info.mask, hdus, files)
        for y0, y1, x0, x1 in windows:
            variance = bad = None
            if noise_data is not None:
                noise = np.asarray(noise_data[y0:y1, x0:x1], np.float32)
                variance = _variance(noise, info.noise_kind)
            if mask_data is not None:
                bad = np.asarray(mask_data[y0:y1, x0:x1]) != 0
            image = np.asarray(image_data[y0:y1, x0:x1], dtype=np.float32)
            cutouts.append(Cutout(image, (y0, x0), variance, bad))
    return estimate_psf_cutouts(cutouts, info.shape, saturation=info.saturation)


def _separate_plane(file: Path, role: str, shape: tuple[int, int]) -> InputPlane:
    """The noise (``weight``, ``rms``) or ``mask`` plane of a separate file, validated.

    It is the file's first HDU with pixels; it must have the image's shape, and a
    mask must hold integers.
    """
    option = SEPARATE_FILE_OPTIONS[role]
    what = f"{role} file {file} ({option})"
    with (
        _read_errors_as_input_error(what),
        _open_fits(file, expected=f"a FITS image for {option}") as hdus,
    ):
        index = next((i for i, hdu in enumerate(hdus) if _is_image_hdu(hdu)), None)
        if index is None:
            raise InputError(
                f"{what} has no image HDU (no HDU with pixel data); pass a FITS image "
                "of the mosaic's shape"
            )
        hdu = hdus[index]
        if tuple(hdu.shape) != shape:
            raise InputError(
                f"{what} has shape {tuple(hdu.shape)} but the image is {shape}; pass the "
                f"{role} map of this mosaic, on its pixel grid"
            )
        data = _hdu_data(hdu, file)  # reads it: catches truncation now
        if role == "mask":
            _check_mask_values(data, what)
        extname = _extname(hdu)
    return InputPlane(file.resolve(), index, role, extname, file_sha256(file))


def _check_mask_values(data: np.ndarray, where: str) -> None:
    """Refuse a mask plane that does not hold integers (bit flags)."""
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(
            f"{where} holds {data.dtype.name} values, not integers; write the mask as an integer "
            "image (BITPIX 8, 16 or 32), non-zero where a pixel is bad"
        )


def _input_sha256(own_sha256: str, noise: InputPlane | None, mask: InputPlane | None) -> str:
    """The mosaic file's checksum, or, with separate files, one over all of theirs."""
    separate = {
        name: [plane.kind, plane.sha256]
        for name, plane in (("noise", noise), ("mask", mask))
        if plane is not None and plane.sha256 is not None
    }
    if not separate:
        return own_sha256
    payload = json.dumps({"mosaic": own_sha256, **separate}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@contextlib.contextmanager
def _read_errors_as_input_error(what: str) -> Iterator[None]:
    """Turn the errors astropy raises on a damaged file into one InputError naming ``what``."""
    try:
        yield
    except InputError:
        raise
    except (OSError, TypeError, ValueError, IndexError) as error:
        raise InputError(
            f"{what} is truncated or corrupt ({_short(error)}); copy or regenerate the file"
        ) from None


@contextlib.contextmanager
def _open_fits(path: Path, expected: str = "a FITS mosaic") -> Iterator[fits.HDUList]:
    """Open a FITS file, turning 'not FITS' and truncation warnings into InputError.

    The file handle is opened here, not by astropy, so that it is closed even
    when astropy fails half-way through reading the headers. ``expected`` names
    what to pass instead of a file that is not FITS.
    """
    try:
        handle = open(path, "rb")  # closed by the with statement below
    except OSError as error:
        raise InputError(
            f"{path} cannot be read ({_short(error)}); check that the file is readable"
        ) from None
    with handle:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("ignore", category=FITSFixedWarning)
            # astropy only warns (and logs to stderr) when the file is shorter than
            # its headers say; a truncated mosaic is an input error
            warnings.filterwarnings("error", message=".*truncated", category=AstropyUserWarning)
            try:
                # memmap=None maps the file like True, but without astropy's strict mode,
                # which refuses integer images scaled by BZERO/BSCALE (uint16 mosaics)
                hdus = fits.open(handle, memmap=None, lazy_load_hdus=False)
            except OSError as error:
                raise InputError(
                    f"{path} is not a FITS file ({_short(error)}); pass {expected}"
                ) from None
            except (fits.verify.VerifyWarning, AstropyUserWarning) as error:
                raise InputError(
                    f"{path} is truncated or corrupt ({_short(error)}); copy or regenerate the file"
                ) from None
        try:
            yield hdus
        finally:
            hdus.close()


def _find_image_hdu(hdus: fits.HDUList, path: Path) -> int:
    """The first HDU named ``SCI``, else the first image HDU that is no noise or mask plane."""
    candidates = [index for index, hdu in enumerate(hdus) if _is_image_hdu(hdu)]
    for index in candidates:
        if _extname(hdus[index]) == "SCI":
            return index
    planes = (*NOISE_EXTNAMES, *MASK_EXTNAMES)
    for index in candidates:
        if _extname(hdus[index]) not in planes:
            return index
    raise InputError(
        f"{path} has no image HDU (no HDU with pixel data besides noise or mask planes); "
        "write the mosaic as the primary HDU or an IMAGE extension"
    )


def _is_image_hdu(hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> bool:
    """Whether ``hdu`` is an image HDU with pixels (``NAXIS`` > 0)."""
    is_image = isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
    return is_image and hdu.header.get("NAXIS", 0) > 0


def _extname(hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> str:
    """``EXTNAME`` of an HDU, upper case ("" when it has none)."""
    return str(hdu.header.get("EXTNAME", "")).strip().upper()


def _checked_shape(hdu: fits.ImageHDU, index: int, path: Path) -> tuple[int, int]:
    shape = tuple(int(n) for n in hdu.shape)
    if len(shape) != 2:
        raise InputError(
            f"{path} HDU {index} holds {len(shape)}-D data of shape {shape}; survey-seg "
            "screens 2-D images: write one 2-D plane per file"
        )
    if min(shape) == 0:
        raise InputError(f"{path} HDU {index} is a zero-size image {shape}; pass a non-empty image")
    return shape  # type: ignore[return-value]


def _hdu_data(hdu: fits.ImageHDU, path: Path) -> np.ndarray:
    data = hdu.data
    if data is None:
        raise InputError(f"{path}: an HDU has a header but no data; regenerate the file")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"{path}: pixel type {data.dtype} is not real-valued; write float32 data")
    return data


_WCS_NUMERIC_KEYS = re.compile(r"^(CRVAL|CRPIX|CDELT|CROTA)[12]$|^(CD|PC)[12]_[12]$")


def _celestial_wcs(header: fits.Header, path: Path, index: int) -> WCS:
    for key in header:
        value = header[key]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if _WCS_NUMERIC_KEYS.match(key) and not is_number:
            # astropy only warns and silently uses a default (0 or 1) for such a keyword
            raise InputError(
                f"{path} HDU {index} has a malformed WCS ({key} = {value!r} is not a number); "
                f"write a numeric {key}"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as error:  # astropy raises many types for malformed WCS
        raise InputError(
            f"{path} HDU {index} has a malformed WCS ({_wcslib_reason(error)}); "
            "fix the CTYPE/CRVAL/CRPIX/CD keywords"
        ) from None
    if not wcs.has_celestial or wcs.naxis != 2:
        raise InputError(
            f"{path} HDU {index} has no celestial WCS (CTYPE1/CTYPE2 such as RA---TAN/DEC--TAN "
            "are missing); add the WCS of the mosaic to its header"
        )
    matrix = wcs.pixel_scale_matrix
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) == 0:
        raise InputError(
            f"{path} HDU {index} has a singular WCS pixel matrix (CD or CDELT is zero or NaN); "
            "fix the CD/CDELT keywords"
        )
    try:
        ny, nx = wcs.pixel_shape[::-1] if wcs.pixel_shape else (1, 1)
        sky = wcs.pixel_to_world_values([0.0, nx - 1.0], [0.0, ny - 1.0])
        if not np.all(np.isfinite(sky)):
            raise ValueError("pixel corners do not map to the sky")
    except Exception as error:
        raise InputError(
            f"{path} HDU {index} has a WCS that does not map pixels to the sky "
            f"({_short(error)}); fix the CRVAL/CRPIX/CD keywords"
        ) from None
    return wcs


def _find_plane_hdu(
    hdus: fits.HDUList, image_hdu: int, shape: tuple[int, int], path: Path, kinds: dict[str, str]
) -> InputPlane | None:
    """The first image HDU whose ``EXTNAME`` is a key of ``kinds``, as a plane of that kind.

    ``kinds`` is :data:`NOISE_EXTNAMES` or maps :data:`MASK_EXTNAMES` to ``"mask"``;
    None when there is no such HDU. An HDU without pixels (an ``ERR`` or ``DQ`` of
    ``NAXIS = 0``) is no plane.
    """
    for index, hdu in enumerate(hdus):
        name = _extname(hdu)
        if index == image_hdu or name not in kinds or not _is_image_hdu(hdu):
            continue
        if tuple(hdu.shape) != shape:
            plane = "mask" if kinds[name] == "mask" else "noise"
            raise InputError(
                f"{path} {name} HDU has shape {tuple(hdu.shape)} but the image is {shape}; "
                f"write a {plane} plane of the image's shape or drop it"
            )
        return InputPlane(path, index, kinds[name], name)
    return None


def _optional_float(header: fits.Header, key: str) -> float | None:
    value = header.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _zero_point(header: fits.Header) -> tuple[float | None, str | None]:
    """The zero point of the first of :data:`ZERO_POINT_KEYS` that holds a number, and that key."""
    for key in ZERO_POINT_KEYS:
        value = _optional_float(header, key)
        if value is not None:
            return value, key
    return None, None


def _optional_positive(header: fits.Header, key: str) -> float | None:
    """A numeric keyword > 0; None when absent, not a number or not positive."""
    value = _optional_float(header, key)
    return value if value is not None and value > 0 else None


def _optional_string(header: fits.Header, key: str) -> str | None:
    """A string keyword, stripped; None when absent or blank."""
    value = header.get(key)
    return str(value).strip() or None if value is not None else None


def _psf_fwhm(header: fits.Header, path: Path, image_hdu: int) -> float | None:
    """The ``PSFFWHM`` keyword (pixels), None when absent; an InputError when unusable."""
    if PSF_FWHM_KEY not in header:
        return None
    value = _optional_float(header, PSF_FWHM_KEY)
    if value is None or value <= 0:
        raise InputError(
            f"{path} HDU {image_hdu} has {PSF_FWHM_KEY} = {header[PSF_FWHM_KEY]!r}; it must be "
            "the PSF FWHM in pixels (> 0): correct the keyword or delete it"
        )
    return value


def _wcslib_reason(error: BaseException) -> str:
    """The reason of a wcslib error, without its 'ERROR n in f() at line ...' lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith("ERROR ")]
    return reasons[0][:160] if reasons else _short(error)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


# --------------------------------------------------------------------------- WCS <-> attributes


def wcs_to_attrs(wcs: WCS) -> dict[str, Any]:
    """Return the FITS WCS keywords of ``wcs`` as a JSON-serialisable dict."""
    header = wcs.to_header(relax=True)
    return {key: header[key] for key in header}


def wcs_from_attrs(attrs: dict[str, Any]) -> WCS:
    """Rebuild a WCS stored with :func:`wcs_to_attrs`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header(attrs), naxis=2)


# --------------------------------------------------------------------------- ingest


def ingest_mosaic(
    info: MosaicInfo,
    out_dir: str | os.PathLike,
    *,
    tile_size: int,
    background_cell: int = 64,
) -> MosaicStore:
    """Copy a validated FITS mosaic into ``OUT/mosaic.zarr``, one shard per tile core.

    Rows are streamed in blocks, so memory stays bounded by a row of shards.
    The noise plane becomes ``variance`` (weight: ``1 / weight``; rms: ``rms²``).
    Pixels that are not finite, or whose variance is not positive (a weight or an
    rms of 0), become NaN in ``image``: no data. An input mask becomes the uint8
    ``input_mask`` (1 where it is non-zero); those pixels keep their values in
    ``image`` but are left out of the sky background mesh, measured on the way.

    Parameters
    ----------
    info : MosaicInfo
        From :func:`inspect_fits_mosaic`.
    out_dir : path-like
        Output directory (must exist).
    tile_size : int
        Tile core side: the shard side of the arrays.
    background_cell : int
        Side of the background mesh cells, in pixels.

    Returns
    -------
    MosaicStore
    """
    path = Path(out_dir) / MOSAIC_STORE
    ny, nx = info.shape
    shards = (min(tile_size, ny), min(tile_size, nx))
    chunks = tuple(_inner_chunk(s) for s in shards)
    root = zarr.open_group(path, mode="w")
    common = {"chunks": chunks, "shards": shards, "fill_value": np.nan, "compressors": _codec()}
    image_out = root.create_array("image", shape=info.shape, dtype="float32", **common)
    variance_out = mask_out = None
    if info.noise is not None:
        variance_out = root.create_array("variance", shape=info.shape, dtype="float32", **common)
    if info.mask is not None:
        mask_out = root.create_array(
            "input_mask",
            shape=info.shape,
            dtype="uint8",
            chunks=chunks,
            shards=shards,
            fill_value=0,
            compressors=_codec(),
            attributes={"description": INPUT_MASK_DESCRIPTION},
        )
    block_rows = background_cell * max(1, round(tile_size / background_cell))
    level_rows, rms_rows = [], []
    n_nonfinite = n_flagged = 0
    with contextlib.ExitStack() as files:
        hdus = files.enter_context(_open_fits(info.path))
        image_data = hdus[info.image_hdu].data
        noise_data = _plane_data(info.noise, hdus, files)
        mask_data = _plane_data(info.mask, hdus, files)
        for y0 in range(0, ny, block_rows):
            y1 = min(ny, y0 + block_rows)
            image = np.asarray(image_data[y0:y1], dtype=np.float32)
            invalid = ~np.isfinite(image)
            n_nonfinite += int(np.count_nonzero(np.isinf(image)))
            if noise_data is not None:
                variance = _variance(np.asarray(noise_data[y0:y1], np.float32), info.noise_kind)
                with np.errstate(invalid="ignore"):
                    invalid |= ~np.isfinite(variance) | (variance <= 0)
                variance = np.where(invalid, np.float32(np.nan), variance).astype(np.float32)
                variance_out[y0:y1] = variance
            image[invalid] = np.nan
            image_out[y0:y1] = image
            sky = image
            if mask_data is not None:
                flagged = np.asarray(mask_data[y0:y1]) != 0
                mask_out[y0:y1] = flagged.astype(np.uint8)
                n_flagged += int(np.count_nonzero(flagged))
                sky = np.where(flagged, np.float32(np.nan), image)
            level, rms, _ = cell_statistics(sky, background_cell)
            level_rows.append(level)
            rms_rows.append(rms)
    mesh = finish_mesh(np.concatenate(level_rows), np.concatenate(rms_rows), background_cell)
    root.create_array("background_level", data=mesh.level)
    root.create_array("background_rms", data=mesh.rms)
    root.attrs.update(
        {
            "noise_correlation": _measure_noise_correlation(root, mesh, info.psf_fwhm_pix),
            "wcs": wcs_to_attrs(info.wcs),
            "source_path": str(info.path),
            "source_sha256": info.sha256,
            "saturation": info.saturation,
            "zero_point": info.zero_point,
            "flux_unit": info.flux_unit,
            "pixel_scale_arcsec": info.pixel_scale_arcsec,
            "psf_fwhm_pix": info.psf_fwhm_pix,
            "psf": info.psf,
            "noise_kind": info.noise_kind,
            "planes": info.describe_planes(),
            "background_cell": background_cell,
            "tile_size": tile_size,
            "n_nonfinite_input": n_nonfinite,
            "n_flagged_input": n_flagged,
        }
    )
    return MosaicStore(path)


def _measure_noise_correlation(root, mesh: BackgroundMesh, psf_fwhm_pix: float | None) -> dict:
    """:func:`~survey_seg.noise.noise_correlation_ratio` on the central cutout of an ingest.

    The cutout is at most :data:`NOISE_CUTOUT` pixels a side; the kernel is the
    mosaic's PSF (the simulator's 1.8 pix when it is unknown).
    """
    from survey_seg.background import interpolate_mesh
    from survey_seg.noise import image_noise_correlation

    ny, nx = root["image"].shape
    y0, x0 = max(0, (ny - NOISE_CUTOUT) // 2), max(0, (nx - NOISE_CUTOUT) // 2)
    y1, x1 = min(ny, y0 + NOISE_CUTOUT), min(nx, x0 + NOISE_CUTOUT)
    image = np.asarray(root["image"][y0:y1, x0:x1], dtype=np.float64)
    shape = image.shape
    background = interpolate_mesh(mesh.level, mesh.cell_size, (y0, x0), shape)
    if "variance" in root:
        variance = np.asarray(root["variance"][y0:y1, x0:x1], dtype=np.float64)
    else:
        variance = interpolate_mesh(mesh.rms, mesh.cell_size, (y0, x0), shape).astype(float) ** 2
    unflagged = None
    if "input_mask" in root:
        unflagged = np.asarray(root["input_mask"][y0:y1, x0:x1]) == 0
    fwhm = psf_fwhm_pix if psf_fwhm_pix else NOISE_KERNEL_FWHM_PIX
    ratio = image_noise_correlation(image, variance, background, fwhm, unflagged)
    return {"ratio": ratio, "kernel_fwhm_pix": float(fwhm), "cutout": [y0, y1, x0, x1]}


def _plane_data(
    plane: InputPlane | None, mosaic: fits.HDUList, files: contextlib.ExitStack
) -> np.ndarray | None:
    """The (memory-mapped) pixels of a plane: an HDU of ``mosaic`` or of a separate file.

    A separate file is opened in ``files``, and closed with it.
    """
    if plane is None:
        return None
    hdus = mosaic if plane.sha256 is None else files.enter_context(_open_fits(plane.path))
    return hdus[plane.hdu].data


def _variance(noise: np.ndarray, kind: str) -> np.ndarray:
    """Variance from a noise plane of ``kind``: NaN, inf or not positive where unusable.

    ``weight`` is inverse variance (0: no data), ``rms`` is sigma (not positive: no
    data), ``variance`` is taken as it is.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "weight":
            return np.float32(1.0) / noise
        if kind == "rms":
            return np.where(noise > 0, noise * noise, np.float32(np.nan))
    return noise


def _inner_chunk(shard: int) -> int:
    """Largest divisor of ``shard`` not above 256 (at least 32 when one exists)."""
    for size in range(min(256, shard), 31, -1):
        if shard % size == 0:
            return size
    return shard


def _codec() -> zarr.abc.codec.BytesBytesCodec:
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


@dataclass(frozen=True)
class WindowData:
    """Pixels of one tile window (core plus halo), padded beyond the mosaic edge.

    Attributes
    ----------
    image : numpy.ndarray
        float32, NaN where there is no data (also beyond the mosaic edge).
    variance : numpy.ndarray
        float32 per-pixel variance (from the input, or the background RMS squared).
    background : numpy.ndarray
        float32 sky background interpolated from the global mesh.
    flagged : numpy.ndarray or None
        bool, True where the input bad-pixel mask flags the pixel (False beyond the
        mosaic edge); None when the mosaic has no mask.
        :func:`survey_seg.screen.screen_tile` marks those pixels BAD and keeps them
        out of detection and measurement.
    noise_scale : float
        The factor by which :attr:`variance`'s sigma was scaled for noise
        correlated on the PSF's scale (:attr:`MosaicStore.noise_scale`; 1 for
        white noise): ``sqrt(variance) / noise_scale`` is the noise of one pixel.
    """

    image: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    flagged: np.ndarray | None = None
    noise_scale: float = 1.0


class MosaicStore:
    """Read access to an ingested ``mosaic.zarr``.

    Parameters
    ----------
    path : path-like
        The ``mosaic.zarr`` directory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._root = zarr.open_group(self.path, mode="r")
        attrs = dict(self._root.attrs)
        self.attrs = attrs
        self.wcs = wcs_from_attrs(attrs["wcs"])
        self.shape: tuple[int, int] = tuple(self._root["image"].shape)  # type: ignore[assignment]
        self.saturation: float | None = attrs.get("saturation")
        self.zero_point: float | None = attrs.get("zero_point")
        self.pixel_scale_arcsec: float = float(attrs["pixel_scale_arcsec"])
        self.psf_fwhm_pix: float | None = attrs.get("psf_fwhm_pix")
        self.flux_unit: str | None = attrs.get("flux_unit")
        correlation = attrs.get("noise_correlation") or {}
        self.noise_scale: float = max(1.0, float(correlation.get("ratio", 1.0)))
        """Factor on the per-pixel noise of every window read: the measured noise
        correlation ratio (:mod:`survey_seg.noise`), never below 1."""
        self.mesh = BackgroundMesh(
            np.asarray(self._root["background_level"][...]),
            np.asarray(self._root["background_rms"][...]),
            int(attrs["background_cell"]),
        )

    def read_window(self, tile: Tile) -> WindowData:
        """Read a tile's window (core plus halo) with NaN beyond the mosaic edge.

        The variance is scaled by :attr:`noise_scale` squared: detection and flux
        errors then hold for noise correlated on the PSF's scale.
        """
        from survey_seg.background import interpolate_mesh

        image = np.pad(self._root["image"][tile.read_slices], tile.read_pad, constant_values=np.nan)
        cell = self.mesh.cell_size
        if "variance" in self._root:
            variance = np.pad(
                self._root["variance"][tile.read_slices], tile.read_pad, constant_values=np.nan
            )
        else:
            rms = interpolate_mesh(self.mesh.rms, cell, tile.origin, tile.window_shape)
            variance = np.where(np.isfinite(image), rms * rms, np.nan).astype(np.float32)
        if self.noise_scale != 1.0:  # correlated noise: noisier on the PSF's scale
            variance = (variance * np.float32(self.noise_scale**2)).astype(np.float32)
        background = interpolate_mesh(self.mesh.level, cell, tile.origin, tile.window_shape)
        flagged = None
        if "input_mask" in self._root:
            flags = self._root["input_mask"][tile.read_slices]
            flagged = np.pad(flags, tile.read_pad, constant_values=0) != 0
        return WindowData(
            image=image,
            variance=variance,
            background=background,
            flagged=flagged,
            noise_scale=self.noise_scale,
        )

    @property
    def image(self) -> zarr.Array:
        """The ingested image as a lazy, read-only array (index it to read)."""
        return self._root["image"]

    def read_image(self) -> np.ndarray:
        """Read the whole image into memory (small mosaics, tests, quick looks)."""
        return np.asarray(self._root["image"][...])


# --------------------------------------------------------------------------- outputs


def check_no_links(out_dir: str | os.PathLike, names: Iterable[str]) -> None:
    """Refuse output entries that are symbolic links.

    survey-seg writes only inside the output directory: a link planted there
    (``OUT/tiles -> /home/me``) must not lead a write or a ``--force`` removal
    outside it.

    Raises
    ------
    OutputError
        An entry ``OUT/name`` is a symbolic link (named, with its target).
    """
    for name in names:
        path = Path(out_dir) / name
        if path.is_symlink():
            raise OutputError(
                f"{path} is a symbolic link (to {os.readlink(path)}); survey-seg writes only "
                "inside the output directory and never through links: remove the link"
            )


OUTPUT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)
"""OS errors that mean the output directory can take no more writes (full, read-only,
permissions): the run stops at once rather than fail every remaining tile."""


def is_output_failure(error: BaseException) -> bool:
    """Whether ``error`` says the output directory can take no more writes."""
    return (
        isinstance(error, OSError)
        and not isinstance(error, OutputError)
        and error.errno in OUTPUT_ERRNOS
    )


@contextlib.contextmanager
def output_failures(out_dir: str | os.PathLike) -> Iterator[None]:
    """Turn a full or unwritable output directory into one :class:`OutputError`.

    Every write is atomic (a temporary name, then a rename), so what was written
    before the failure stays whole: the message says so and how to go on.
    """
    try:
        yield
    except OSError as error:
        if not is_output_failure(error):
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise OutputError(
            f"cannot write to the output directory {out_dir}: {error.strerror or error}{where}; "
            "free space or fix its permissions, then run the same command again (a run with "
            "--resume): finished tiles and earlier outputs are kept"
        ) from None


# --------------------------------------------------------------------------- run lock


def acquire_run_lock(out_dir: str | os.PathLike, run_id: str) -> None:
    """Take ``OUT/run.lock`` for ``run_id``, so that no second run writes to ``OUT``.

    The lock file is created atomically and names the run, its process and host.
    A lock whose process is gone (same host, dead process) is stale and taken
    over; the same run may take its own lock again (a retried task).

    Raises
    ------
    OutputError
        Another live run holds the lock.
    """
    path = Path(out_dir) / RUN_LOCK
    record = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder and holder.get("run_id") != run_id and _holder_is_alive(holder):
                raise OutputError(_locked_message(path, holder)) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale, unreadable or our own: take it over
            continue
        with os.fdopen(handle, "w") as stream:
            json.dump(record, stream)
        return


def check_lock_held_by(out_dir: str | os.PathLike, run_id: str) -> None:
    """Raise :class:`OutputError` unless run ``run_id`` holds ``OUT/run.lock``.

    A tile task checks this before it writes: a task still running after its run
    ended (stopped on a full disk, or its driver killed and the run resumed by
    another) then writes nothing, so no write outlives the run that holds the lock.
    """
    holder = _lock_holder(Path(out_dir) / RUN_LOCK)
    if not holder or holder.get("run_id") != run_id:
        raise OutputError(
            f"run {run_id} no longer holds {Path(out_dir) / RUN_LOCK}; its tile was not "
            "written (rerun with --resume to finish the survey)"
        )


def check_run_lock(out_dir: str | os.PathLike) -> None:
    """Raise :class:`OutputError` when a live run holds ``OUT/run.lock``."""
    path = Path(out_dir) / RUN_LOCK
    holder = _lock_holder(path)
    if holder and _holder_is_alive(holder):
        raise OutputError(_locked_message(path, holder))


def release_run_lock(out_dir: str | os.PathLike, run_id: str) -> None:
    """Remove ``OUT/run.lock`` if ``run_id`` holds it."""
    path = Path(out_dir) / RUN_LOCK
    holder = _lock_holder(path)
    if holder and holder.get("run_id") == run_id:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _lock_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _holder_is_alive(holder: dict) -> bool:
    """Whether the lock's process still runs; a process on another host counts as alive."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False  # not a lock this module wrote: stale
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _locked_message(path: Path, holder: dict) -> str:
    return (
        f"another survey-seg run ({holder.get('run_id', '?')}, process {holder.get('pid', '?')} "
        f"on {holder.get('host', '?')}) is writing to {path.parent}; wait for it to finish, "
        f"or delete {path} if that run is no longer alive"
    )


def _atomic_parquet(table: pd.DataFrame | pa.Table, path: Path) -> None:
    import io

    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    if isinstance(table, pa.Table):
        pq.write_table(table, buffer)
    else:
        table.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- descriptions


FITS_BLOCK = 2880
"""Size of a FITS block: every header and data unit is padded to a multiple of it."""
UINT32_BZERO = 2147483648
"""``BZERO`` of a uint32 image stored as FITS int32 (as astropy writes it)."""
MASK_DESCRIPTION = (
    "bit planes of each pixel: the OR of 1 << bit of every plane that applies "
    "(mask_bits names each bit)"
)
SEGMENTATION_DESCRIPTION = (
    "id of the source whose segment holds the pixel (the id column of sources.parquet), "
    "0 where there is none"
)
INPUT_MASK_DESCRIPTION = (
    "1 where the input bad-pixel mask (a DQ, MSK, MASK, FLAG, FLAGS or BPM HDU, or --mask) "
    "is non-zero: screening marks the pixel BAD and leaves it out of detection and measurement"
)
QUALITY_DESCRIPTION = (
    "the data-quality classifier's estimate of the fraction of each stamp of "
    "quality_stamp x quality_stamp mosaic pixels that is flagged (NO_DATA or an artefact "
    "plane; network methods); NaN where not screened"
)


def described_table(table: pd.DataFrame, columns: tuple[Column, ...]) -> pa.Table:
    """``table`` as Arrow, each schema column's field carrying its unit and description.

    Parameters
    ----------
    table : pandas.DataFrame
        The rows; its index is dropped.
    columns : tuple of Column
        Schema columns (from :mod:`survey_seg.catalog`); fields of other names keep
        no metadata.

    Returns
    -------
    pyarrow.Table
    """
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    by_name = {column.name: column for column in columns}
    fields = []
    for field in arrow.schema:
        column = by_name.get(field.name)
        if column is not None:
            metadata = {"description": column.description}
            if column.unit:
                metadata["unit"] = column.unit
            field = field.with_metadata(metadata)
        fields.append(field)
    schema = pa.schema(fields, metadata=arrow.schema.metadata)
    return pa.Table.from_arrays(arrow.columns, schema=schema)


def _fits_table(
    table: pd.DataFrame, name: str, columns: tuple[Column, ...], provenance: dict | None
) -> fits.HDUList:
    """A FITS file of ``table``: provenance cards, then the table HDU ``NAME``.

    Each schema column gets ``TUNITn`` (when it has a unit) and ``TCOMMn`` (its
    description).
    """
    from astropy.table import Table

    hdu = fits.table_to_hdu(Table.from_pandas(table))
    hdu.name = name.upper()
    by_name = {column.name: column for column in columns}
    for index, column_name in enumerate(table.columns, start=1):
        column = by_name.get(column_name)
        if column is None:
            continue
        if column.unit:
            hdu.columns[index - 1].unit = column.unit  # astropy writes it as TUNITn
        hdu.header[f"TCOMM{index}"] = column.description
    if any(len(str(card.value)) > 68 for card in hdu.header.cards if isinstance(card.value, str)):
        hdu.header.set("LONGSTRN", "OGIP 1.0", "long strings continue on CONTINUE cards")
    primary = fits.PrimaryHDU(header=_provenance_header(provenance))
    return fits.HDUList([primary, hdu])


def _set_card(header: fits.Header, key: str, value: Any, comment: str = "") -> None:
    """Set a card, its comment cut to what fits beside the value on the card.

    A long string goes on ``CONTINUE`` cards, which also carry a long comment.
    """
    if isinstance(value, str) and len(value) > 68:
        header[key] = (value, comment)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        probe = fits.Card(key, value, "#").image.rstrip()
    room = 80 - (len(probe) - 1) if probe.endswith("/ #") else 0
    header[key] = (value, comment[:room] if room >= 10 else "")


_PROVENANCE_CARDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("MOSAIC", ("input", "path"), "input mosaic"),
    ("MOSAISHA", ("input", "sha256"), ""),
    ("METHOD", ("method", "method"), "screening method"),
    ("MODEL", ("method", "model"), "network model name"),
    ("MODELSHA", ("method", "sha256"), ""),
    ("CLMODEL", ("method", "clump_model", "model"), "clump model name"),
    ("CLMODSHA", ("method", "clump_model", "sha256"), ""),
    ("TILESIZE", ("grid", "tile_size"), "[pix] side of a tile core"),
    ("HALO", ("grid", "halo"), "[pix] context read around each core"),
    ("RESULTKY", ("result_key",), "hash of inputs and parameters"),
)
"""FITS keyword, where its value is in a run manifest, and the card's comment."""


def _nested(record: dict, keys: tuple[str, ...]) -> Any:
    """``record[k0][k1]...``, None where a level is missing."""
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _provenance_header(provenance: dict | None) -> fits.Header:
    """Provenance cards from a run manifest (as ``pipeline._manifest`` builds it).

    Package version, run id, date, input path and sha256, method and model, tile
    size, halo and result key; only the package version without a manifest.
    """
    manifest = provenance or {}
    header = fits.Header()
    _set_card(header, "ORIGIN", "survey-seg", "software that wrote this file")
    version = str(manifest.get("package_version") or __version__)
    _set_card(header, "SSEG_VER", version, "survey-seg package version")
    if manifest.get("run_id"):
        _set_card(header, "RUN_ID", str(manifest["run_id"]), "survey-seg run id")
    _set_card(header, "DATE", _fits_date(manifest.get("updated")), "UTC time the run merged")
    for key, where, comment in _PROVENANCE_CARDS:
        value = _nested(manifest, where)
        if value is not None and value != "":
            value = int(value) if key in ("TILESIZE", "HALO") else str(value)
            _set_card(header, key, value, comment)
    if any(key.endswith("SHA") for key in header):
        header.add_comment("MOSAISHA, MODELSHA, CLMODSHA: sha256 of the input mosaic,")
        header.add_comment("of the model weights, of the clump model weights;")
        header.add_comment("manifest.json beside this file has the full provenance")
    if any(len(str(card.value)) > 68 for card in header.cards if isinstance(card.value, str)):
        _set_card(header, "LONGSTRN", "OGIP 1.0", "long strings continue on CONTINUE cards")
    return header


def _fits_date(updated: Any) -> str:
    """A manifest's ISO time stamp as a FITS ``DATE`` (UTC, to the second); now without one."""
    try:
        moment = datetime.fromisoformat(str(updated)) if updated else datetime.now(UTC)
    except ValueError:
        moment = datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _binned_wcs(wcs: WCS, factor: int) -> WCS:
    """The WCS of the grid of ``factor`` x ``factor`` blocks of mosaic pixels.

    Pixel (i, j) of the grid is the block starting at mosaic pixel (factor i,
    factor j); ``wcs`` must have no distortion. Mosaic pixel ``p`` (0-based) is at
    grid pixel ``(p - (factor - 1) / 2) / factor``.
    """
    binned = wcs.deepcopy()
    binned.wcs.crpix = (np.asarray(wcs.wcs.crpix) + (factor - 1) / 2) / factor
    if binned.wcs.has_cd():
        binned.wcs.cd = np.asarray(wcs.wcs.cd) * factor
    else:
        binned.wcs.cdelt = np.asarray(wcs.wcs.cdelt) * factor
    binned.wcs.set()
    return binned


def _has_distortion(wcs: WCS) -> bool:
    """Whether ``wcs`` maps pixels through a distortion (SIP or lookup tables)."""
    return any(
        getattr(wcs, name, None) is not None
        for name in ("sip", "cpdis1", "cpdis2", "det2im1", "det2im2")
    )


def _image_header(name: str, shape: tuple[int, ...], bitpix: int, bzero: int = 0) -> fits.Header:
    """The mandatory cards of an IMAGE extension of ``shape`` (numpy order)."""
    header = fits.Header()
    header["XTENSION"] = ("IMAGE", "image extension")
    header["BITPIX"] = (bitpix, "array data type")
    header["NAXIS"] = (len(shape), "number of array dimensions")
    for axis, length in enumerate(reversed(shape), start=1):
        header[f"NAXIS{axis}"] = int(length)
    header["PCOUNT"] = (0, "number of parameters")
    header["GCOUNT"] = (1, "number of groups")
    if bzero:
        header["BSCALE"] = (1, "physical = BZERO + BSCALE * stored")
        header["BZERO"] = (bzero, "offset of unsigned integers stored as signed")
    header["EXTNAME"] = (name, "extension name")
    return header


def _mask_bit_cards(header: fits.Header, bits: dict[str, dict[str, Any]]) -> None:
    """``MSKBITn = 'NAME' / meaning`` for every plane: value ``1 << n`` in the image."""
    header.add_comment("mask planes: a pixel is the OR of 1 << n of every plane MSKBITn set")
    for plane, spec in sorted(bits.items(), key=lambda item: int(item[1]["bit"])):
        _set_card(header, f"MSKBIT{int(spec['bit'])}", plane, str(spec.get("doc", "")))


def _stream_image(
    stream: BinaryIO, array: zarr.Array, header: fits.Header, dtype: str, block_rows: int
) -> None:
    """Write one image HDU: its header, then ``block_rows`` rows at a time, then padding.

    ``dtype`` is the big-endian FITS type of the data; ``">i4"`` stores uint32 pixels
    shifted by ``BZERO`` (the top bit flipped).
    """
    stream.write(header.tostring().encode("ascii"))
    written = 0
    for y0 in range(0, array.shape[0], block_rows):
        block = np.asarray(array[y0 : y0 + block_rows])
        if dtype == ">i4" and block.dtype == np.uint32:
            block = (block ^ np.uint32(UINT32_BZERO)).view(np.int32)
        data = np.ascontiguousarray(block, dtype=dtype).tobytes()
        stream.write(data)
        written += len(data)
    stream.write(b"\0" * (-written % FITS_BLOCK))


class OutputStore:
    """The output directory of a run: masks, per-tile results, manifest.

    Parameters
    ----------
    out_dir : path-like
        The directory ``OUT/``.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.root = Path(out_dir)
        self.tiles_dir = self.root / TILES_DIR
        self.manifest_path = self.root / MANIFEST
        self.masks_path = self.root / MASKS_STORE

    # -- masks ---------------------------------------------------------------------------

    def create_masks(
        self, shape: tuple[int, int], tile_size: int, wcs: WCS, *, quality_stamp: int | None = None
    ) -> None:
        """Create empty ``mask`` and ``segmentation`` arrays, one shard per tile core.

        With ``quality_stamp`` (a divisor of ``tile_size``), also a ``quality`` map of
        one float per stamp of that side, one chunk per tile core.
        """
        shards = (min(tile_size, shape[0]), min(tile_size, shape[1]))
        chunks = tuple(_inner_chunk(s) for s in shards)
        root = zarr.open_group(self.masks_path, mode="w")
        wcs_attrs = wcs_to_attrs(wcs)
        array_attrs = {
            "mask": {
                "description": MASK_DESCRIPTION,
                "wcs": wcs_attrs,
                "mask_bits": describe_bits(),
            },
            "segmentation": {"description": SEGMENTATION_DESCRIPTION, "wcs": wcs_attrs},
        }
        for name, dtype in (("mask", MASK_DTYPE), ("segmentation", np.int64)):
            root.create_array(
                name,
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                shards=shards,
                fill_value=0,
                compressors=_codec(),
                attributes=array_attrs[name],
            )
        attrs = {"wcs": wcs_attrs, "mask_bits": describe_bits()}
        if quality_stamp:
            per_tile = tile_size // quality_stamp
            quality_attrs: dict[str, Any] = {
                "description": QUALITY_DESCRIPTION,
                "quality_stamp": quality_stamp,
            }
            if not _has_distortion(wcs):
                quality_attrs["wcs"] = wcs_to_attrs(_binned_wcs(wcs, quality_stamp))
            root.create_array(
                "quality",
                shape=tuple(-(-n // quality_stamp) for n in shape),
                dtype="float32",
                chunks=(per_tile, per_tile),
                fill_value=np.nan,
                compressors=_codec(),
                attributes=quality_attrs,
            )
            attrs["quality_stamp"] = quality_stamp
        root.attrs.update(attrs)

    def write_core(
        self,
        tile: Tile,
        mask: np.ndarray,
        segmentation: np.ndarray,
        quality: np.ndarray | None = None,
    ) -> None:
        """Write a tile's core results: exactly the shard (and quality chunk) it owns."""
        root = zarr.open_group(self.masks_path, mode="r+")
        root["mask"][tile.core_slices] = mask.astype(MASK_DTYPE, copy=False)
        root["segmentation"][tile.core_slices] = segmentation.astype(np.int64, copy=False)
        stamp = root.attrs.get("quality_stamp")
        if quality is not None and stamp:
            y0, x0 = tile.y0 // stamp, tile.x0 // stamp
            rows, cols = quality.shape
            root["quality"][y0 : y0 + rows, x0 : x0 + cols] = quality

    def open_masks(self) -> tuple[zarr.Array, zarr.Array]:
        """The ``mask`` and ``segmentation`` arrays as lazy, read-only arrays."""
        root = zarr.open_group(self.masks_path, mode="r")
        return root["mask"], root["segmentation"]

    def read_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Read the whole ``mask`` and ``segmentation`` arrays."""
        root = zarr.open_group(self.masks_path, mode="r")
        return np.asarray(root["mask"][...]), np.asarray(root["segmentation"][...])

    def write_masks_fits(
        self, *, provenance: dict | None = None, block_rows: int | None = None
    ) -> Path:
        """Export ``masks.zarr`` as ``OUT/masks.fits``, streamed in blocks of rows.

        The file holds an empty primary HDU with the provenance cards, then one
        image HDU per array, each with the mosaic's WCS (0-based pixel (x, y) of
        the catalogs maps to their (ra, dec)) and the provenance cards:

        - ``MASK``: the uint32 bit planes, stored as int32 with ``BZERO =
          2147483648`` (astropy reads them back as uint32); ``MSKBITn = 'NAME'``
          names plane ``n`` (value ``1 << n``).
        - ``SEGMENT``: the int64 source ids (the ``id`` column of the sources).
        - ``QUALITY``: the float32 per-stamp estimated flagged fraction, when the
          run has one, with ``STAMP`` and the WCS of its stamp grid.

        Memory stays bounded by ``block_rows`` rows of one array. The file is
        written under a temporary name and renamed, so an earlier ``masks.fits``
        is never half overwritten.

        Parameters
        ----------
        provenance : dict or None
            The run manifest (package version, run id, input, method, grid) whose
            summary goes into the headers; None writes only the package version.
        block_rows : int or None
            Rows read and written at a time; None: the height of a Zarr chunk.

        Returns
        -------
        pathlib.Path
            The path of ``masks.fits``.

        Raises
        ------
        ValueError
            ``block_rows`` is not a positive integer, or ``provenance`` not a dict.
        OutputError
            The directory has no ``masks.zarr`` to export.
        """
        if block_rows is not None and (
            isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1
        ):
            raise ValueError(f"block_rows must be a positive integer or None, not {block_rows!r}")
        if provenance is not None and not isinstance(provenance, dict):
            raise ValueError(f"provenance must be a manifest dict or None, not {provenance!r}")
        if not (self.masks_path / "zarr.json").is_file():
            raise OutputError(
                f"{self.masks_path} does not exist; run the survey before exporting its masks"
            )
        return self._write_masks_fits(provenance, block_rows)

    def _write_masks_fits(self, provenance: dict | None, block_rows: int | None) -> Path:
        root = zarr.open_group(self.masks_path, mode="r")
        attrs = dict(root.attrs)
        wcs = wcs_from_attrs(attrs["wcs"])
        cards = _provenance_header(provenance)
        wcs_cards = wcs.to_header(relax=True)
        images = []  # (array, header, big-endian FITS dtype)
        mask, segmentation = root["mask"], root["segmentation"]
        header = _image_header("MASK", mask.shape, 32, bzero=UINT32_BZERO)
        header.extend(wcs_cards)
        _mask_bit_cards(header, attrs.get("mask_bits") or describe_bits())
        images.append((mask, header, ">i4"))
        header = _image_header("SEGMENT", segmentation.shape, 64)
        header.add_comment("id of the source whose segment holds the pixel, 0 where none;")
        header.add_comment("the id column of sources.parquet and sources.fits")
        header.extend(wcs_cards)
        images.append((segmentation, header, ">i8"))
        stamp = attrs.get("quality_stamp")
        if stamp and "quality" in root:
            quality = root["quality"]
            header = _image_header("QUALITY", quality.shape, -32)
            _set_card(header, "STAMP", int(stamp), "[pix] side of a stamp of mosaic pixels")
            header.add_comment("probability that the data of each stamp are bad; NaN: not screened")
            if _has_distortion(wcs):
                header.add_comment("stamp (i, j) covers mosaic pixels from (STAMP i, STAMP j)")
            else:
                header.extend(_binned_wcs(wcs, int(stamp)).to_header(relax=True))
            images.append((quality, header, ">f4"))
        path = self.root / MASKS_FITS
        with atomic_output(path) as stream:
            primary = fits.PrimaryHDU(header=cards).header
            stream.write(primary.tostring().encode("ascii"))
            for array, header, dtype in images:
                header.extend(cards)
                rows = block_rows or int(array.chunks[0])
                _stream_image(stream, array, header, dtype, rows)
        return path

    # -- per-tile results ----------------------------------------------------------------

    def tile_paths(self, tile_index: int) -> dict[str, Path]:
        """Paths of a tile's result files."""
        stem = self.tiles_dir / f"{tile_index:06d}"
        return {
            "sources": stem.with_suffix(".sources.parquet"),
            "clumps": stem.with_suffix(".clumps.parquet"),
            "record": stem.with_suffix(".json"),
        }

    def write_tile_result(
        self,
        tile_index: int,
        sources: pd.DataFrame,
        clumps: pd.DataFrame,
        record: dict,
        *,
        flux_unit: str | None = None,
    ) -> None:
        """Write a tile's catalogs, then its record: the record marks it finished.

        Each catalog column's Parquet field carries its ``unit`` and ``description``
        (:func:`survey_seg.catalog.table_columns`; ``flux_unit`` replaces ``adu``).
        """
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        paths = self.tile_paths(tile_index)
        for name, table in (("sources", sources), ("clumps", clumps)):
            columns = table_columns(name, flux_unit=flux_unit)
            _atomic_parquet(described_table(table, columns), paths[name])
        atomic_write_bytes(paths["record"], json.dumps(record, sort_keys=True).encode())

    def read_tile_record(self, tile_index: int) -> dict | None:
        """The record of a finished tile, or None if it has none (or an unreadable one)."""
        path = self.tile_paths(tile_index)["record"]
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def read_tile_tables(self, tile_index: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The sources and clumps tables of a finished tile."""
        paths = self.tile_paths(tile_index)
        return pd.read_parquet(paths["sources"]), pd.read_parquet(paths["clumps"])

    # -- manifest ------------------------------------------------------------------------

    def read_manifest(self) -> dict | None:
        """The run manifest, or None if the directory has none."""
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as error:
            raise OutputError(
                f"{self.manifest_path} is corrupt ({error}); rerun with --clean to start over"
            ) from None

    def write_manifest(self, manifest: dict) -> None:
        """Write the manifest atomically."""
        atomic_write_bytes(
            self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode()
        )

    def write_table(
        self,
        table: pd.DataFrame,
        name: str,
        *,
        fits_copy: bool = True,
        flux_unit: str | None = None,
        provenance: dict | None = None,
    ) -> None:
        """Write a global table as ``name.parquet`` and, optionally, ``name.fits``.

        For a catalog of :data:`survey_seg.catalog.CATALOGS`, every column carries
        its description and unit: Parquet field metadata ``description`` and
        ``unit``, FITS ``TCOMMn`` and ``TUNITn``; so do the survey columns of
        :data:`~survey_seg.catalog.SURVEY_COLUMNS` it holds (``mosaic``,
        ``is_primary``). The FITS primary header holds the provenance summary.

        Parameters
        ----------
        table : pandas.DataFrame
            The table.
        name : str
            File stem, and the name of the FITS table HDU (upper case).
        fits_copy : bool
            Also write ``name.fits``.
        flux_unit : str or None
            Unit of the flux columns (the mosaic's ``BUNIT``); None keeps ``adu``.
            Only for a catalog of :data:`~survey_seg.catalog.CATALOGS`.
        provenance : dict or None
            The run manifest, summarised in the FITS primary header.

        Raises
        ------
        ValueError
            A bad ``flux_unit``, or one given for a table that is not a catalog;
            ``provenance`` not a dict.
        """
        if name in CATALOGS:
            columns = table_columns(name, flux_unit=flux_unit)
            columns += tuple(c for c in SURVEY_COLUMNS if c.name in table.columns)
        elif flux_unit is not None:
            raise ValueError(f"flux_unit applies to the catalogs {sorted(CATALOGS)}, not {name!r}")
        else:
            columns = ()
        if provenance is not None and not isinstance(provenance, dict):
            raise ValueError(f"provenance must be a manifest dict or None, not {provenance!r}")
        _atomic_parquet(described_table(table, columns), self.root / f"{name}.parquet")
        if fits_copy:
            import io

            buffer = io.BytesIO()
            _fits_table(table, name, columns, provenance).writeto(buffer)
            atomic_write_bytes(self.root / f"{name}.fits", buffer.getvalue())
