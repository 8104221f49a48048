"""survey-seg: screen sky-survey mosaics for data quality, blends and clumps.

The library does all the work and runs without Prefect; ``flows/`` wraps it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("survey-seg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
