"""Survey catalogs in the HATS layout (HEALPix-partitioned Parquet), updated in place.

A catalog is written with the ``hats`` library's layout and metadata, readable
with ``lsdb.open_catalog(PATH)`` and by plain ``pyarrow.dataset.dataset(PATH /
"dataset")``::

    PATH -> .NAME/vNNNNNN            a symbolic link to the current version
    .NAME/vNNNNNN/hats.properties    catalog properties (also as ``properties``)
    .NAME/vNNNNNN/partition_info.csv the partitions (Norder, Npix)
    .NAME/vNNNNNN/dataset/Norder=K/Dir=D/Npix=N.parquet   one file per HEALPix pixel
    .NAME/vNNNNNN/dataset/_metadata, _common_metadata

Every partition is one HEALPix pixel of one fixed order (chosen by the
caller); its rows are sorted by the spatial index ``_healpix_29`` (the HEALPix
nested pixel of order 29 of ``ra``, ``dec``, HATS's convention) and then by
the caller's sort columns, so the same rows always give the same bytes.

An update builds the next version beside the current one: a partition whose
bytes do not change is a hard link to the current file (not rewritten), a
changed one is written anew, and the link ``PATH`` is then replaced in one
atomic rename. A reader, or a process killed half way, sees either the whole
previous catalog or the whole new one; the next update removes what a killed
one left.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_seg.catalog import Column
from survey_seg.errors import InputError, OutputError
from survey_seg.files import atomic_write_bytes
from survey_seg.store import described_table

__all__ = [
    "SPATIAL_INDEX",
    "CatalogUpdate",
    "catalog_version_dir",
    "partition_order_for",
    "write_hats_catalog",
]

SPATIAL_INDEX = "_healpix_29"
"""HATS's spatial index column: the nested HEALPix pixel of order 29 of (ra, dec)."""
SPATIAL_INDEX_ORDER = 29
_VERSION = re.compile(r"^v(\d{6})$")
_HEALPIX_SIDE_DEG = np.degrees(np.sqrt(4.0 * np.pi / 12.0))
"""Side (degrees) of a HEALPix pixel of order 0; order k has this over 2**k."""


@dataclass(frozen=True)
class CatalogUpdate:
    """What an update of a HATS catalog did.

    Attributes
    ----------
    path : pathlib.Path
        The catalog's link.
    version : str
        The version directory now current (``vNNNNNN``).
    n_rows : int
        Rows in the catalog.
    partitions : tuple of int
        HEALPix pixels (nested, at ``order``) holding rows.
    rewritten : tuple of int
        Partitions written anew (new or changed); every other one is the
        previous version's file, linked.
    removed : tuple of int
        Partitions of the previous version that hold no rows any more.
    order : int
        HEALPix order of the partitions.
    """

    path: Path
    version: str
    n_rows: int
    partitions: tuple[int, ...]
    rewritten: tuple[int, ...]
    removed: tuple[int, ...]
    order: int


def partition_order_for(diameter_deg: float, *, max_order: int = 20) -> int:
    """The largest HEALPix order whose pixels are at least ``diameter_deg`` wide.

    With the diameter of a mosaic, a mosaic meets a few partitions and a
    partition holds the rows of a few mosaics.

    Parameters
    ----------
    diameter_deg : float
        Sky size (degrees) a partition should reach.
    max_order : int
        Cap on the order.

    Returns
    -------
    int
        In ``[0, max_order]``.
    """
    if not np.isfinite(diameter_deg) or diameter_deg <= 0:
        raise InputError(f"diameter_deg must be a positive number of degrees, not {diameter_deg}")
    order = int(np.floor(np.log2(_HEALPIX_SIDE_DEG / diameter_deg)))
    return int(np.clip(order, 0, max_order))


def catalog_version_dir(path: str | os.PathLike) -> Path | None:
    """The version directory the catalog link ``path`` points to (None: no catalog yet)."""
    link = Path(path)
    if not link.is_symlink():
        if link.exists():
            raise OutputError(
                f"{link} is not a survey-seg HATS catalog link; move it away or choose "
                "another --out"
            )
        return None
    target = link.parent / os.readlink(link)
    if target.parent != _versions_dir(link) or not _VERSION.match(target.name):
        raise OutputError(
            f"{link} points outside its versions ({os.readlink(link)}); remove the link and rerun "
            "the survey merge (--resume)"
        )
    return target


def _versions_dir(link: Path) -> Path:
    return link.parent / f".{link.name}"


def write_hats_catalog(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    name: str,
    order: int,
    columns: tuple[Column, ...] = (),
    sort_by: tuple[str, ...] = (),
) -> CatalogUpdate:
    """Write ``table`` as the HATS catalog at ``path``, rewriting only changed partitions.

    Parameters
    ----------
    table : pandas.DataFrame
        The rows, with ``ra`` and ``dec`` in ICRS degrees; a ``_healpix_29``
        column is added (an existing one is refused).
    path : path-like
        The catalog's link (see the module notes); its parent must exist.
    name : str
        Catalog name (``obs_collection`` of ``hats.properties``).
    order : int
        HEALPix order of every partition; keep it from one update to the next,
        or every partition is rewritten.
    columns : tuple of Column
        Schema columns whose description and unit go into the Parquet fields.
    sort_by : tuple of str
        Columns that order rows of equal spatial index (e.g. ``("mosaic", "id")``).

    Returns
    -------
    CatalogUpdate

    Raises
    ------
    InputError
        Missing ``ra``/``dec``, a ``_healpix_29`` column, a bad order or sort column.
    OutputError
        ``path`` exists and is not a catalog link of this module.
    """
    from hats.pixel_math.spatial_index import compute_spatial_index

    link = Path(path)
    missing = [column for column in ("ra", "dec", *sort_by) if column not in table.columns]
    if missing:
        raise InputError(f"catalog {name!r} lacks columns {missing}; pass a table that has them")
    if SPATIAL_INDEX in table.columns:
        raise InputError(f"catalog {name!r} already has a {SPATIAL_INDEX} column; drop it first")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= 29:
        raise InputError(f"order must be an integer in [0, 29], not {order!r}")
    previous = catalog_version_dir(link)
    versions = _versions_dir(link)
    versions.mkdir(parents=True, exist_ok=True)
    _remove_stale_versions(versions, keep=previous)
    number = int(previous.name[1:]) + 1 if previous is not None else 1
    current = versions / f"v{number:06d}"
    current.mkdir()

    table = table.reset_index(drop=True)
    ra = table["ra"].to_numpy(dtype=float)
    dec = table["dec"].to_numpy(dtype=float)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise InputError(f"catalog {name!r} has rows without a finite ra and dec; drop them")
    table[SPATIAL_INDEX] = np.asarray(compute_spatial_index(ra, dec), dtype=np.int64)
    table = table.sort_values([SPATIAL_INDEX, *sort_by], kind="stable").reset_index(drop=True)
    pixel = table[SPATIAL_INDEX].to_numpy() >> (2 * (SPATIAL_INDEX_ORDER - int(order)))
    schema = described_table(table.iloc[:0], columns).schema
    partitions, rewritten = [], []
    for value in np.unique(pixel):
        part = table[pixel == value].reset_index(drop=True)
        data = _parquet_bytes(described_table(part, columns).cast(schema))
        relative = _partition_file(int(order), int(value))
        target = current / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        old = previous / relative if previous is not None else None
        if old is not None and old.is_file() and old.read_bytes() == data:
            _link_or_copy(old, target)
        else:
            atomic_write_bytes(target, data)
            rewritten.append(int(value))
        partitions.append(int(value))
    removed = sorted(set(_previous_partitions(previous, int(order))) - set(partitions))
    _write_metadata(current, name, schema, len(table), int(order), partitions)
    _swap_link(link, current)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return CatalogUpdate(
        path=link,
        version=current.name,
        n_rows=len(table),
        partitions=tuple(partitions),
        rewritten=tuple(rewritten),
        removed=tuple(removed),
        order=int(order),
    )


def _partition_file(order: int, pixel: int) -> Path:
    directory = f"Dir={pixel // 10000 * 10000}"
    return Path("dataset", f"Norder={order}", directory, f"Npix={pixel}.parquet")


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where links are not allowed)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _previous_partitions(previous: Path | None, order: int) -> list[int]:
    if previous is None:
        return []
    directory = previous / "dataset" / f"Norder={order}"
    return [int(p.stem.split("=")[1]) for p in directory.glob("Dir=*/Npix=*.parquet")]


def _remove_stale_versions(versions: Path, keep: Path | None) -> None:
    """Remove the version directories a killed update left (all but ``keep``)."""
    for entry in versions.iterdir():
        if entry != keep and _VERSION.match(entry.name) and not entry.is_symlink():
            shutil.rmtree(entry)
    for entry in versions.parent.glob(f"{versions.name[1:]}.link-*"):
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


def _write_metadata(
    directory: Path, name: str, schema: pa.Schema, n_rows: int, order: int, pixels: list[int]
) -> None:
    """``dataset/_metadata``, ``_common_metadata``, ``partition_info.csv``, the properties."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.catalog.dataset.hats_properties import HatsProperties
    from hats.pixel_math import HealpixPixel

    from survey_seg import __version__

    dataset = directory / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    if pixels:
        hats.io.write_parquet_metadata(directory, create_metadata=True)
    else:  # no rows: the schema alone
        pq.write_metadata(schema, dataset / "_common_metadata")
        pq.write_metadata(schema, dataset / "_metadata")
    PartitionInfo([HealpixPixel(order, pixel) for pixel in pixels]).write_to_file(
        directory / "partition_info.csv"
    )
    provenance = HatsProperties.new_provenance_dict(directory, builder=f"survey-seg {__version__}")
    properties = TableProperties(
        catalog_name=name,
        catalog_type="object",
        total_rows=n_rows,
        ra_column="ra",
        dec_column="dec",
        healpix_column=SPATIAL_INDEX,
        healpix_order=SPATIAL_INDEX_ORDER,
        hats_order=order,
        hats_max_rows=n_rows,
        moc_sky_fraction=len(pixels) / (12 * 4**order),
        **provenance,
    )
    properties.to_properties_file(directory)


def _swap_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one atomic rename."""
    temporary = link.parent / f"{link.name}.link-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(os.path.relpath(target, link.parent), temporary)
    os.replace(temporary, link)
