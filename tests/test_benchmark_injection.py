"""The pooling of seeds and the choice of images in ``benchmarks/injection.py``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def injection(load_benchmark):
    return load_benchmark("injection")


def _summary(recovered, singles, pairs_found, pairs, shattered, large, negative, unmatched):
    return {
        "psf_fwhm_pix": 1.8,
        "completeness": recovered / singles,
        "pair_recall": pairs_found / pairs if pairs else None,
        "pair_recall_resolved": None,
        "large_shattered": shattered,
        "large_total": large,
        "knotty_shattered": 1,
        "knotty_total": 2,
        "clumpy_shattered": 0,
        "clumpy_total": 2,
        "clump_completeness": None,
        "clump_purity": None,
        "spurious_fraction": negative / unmatched,
        "n_injected": singles + 2 * pairs + large,
        "n_completeness": singles,
        "n_pairs": pairs,
        "n_pairs_resolved": 0,
        "n_clumps_injected": 0,
        "n_clumps_in_hosts": 0,
        "n_unmatched": unmatched,
    }


def test_seeds_pool_as_one_run_of_all_their_objects(injection):
    first = injection.table_row("img", "unet", _summary(9, 10, 1, 2, 1, 3, 1, 50), "mosaic", 2.0, 1)
    second = injection.table_row(
        "img", "unet", _summary(27, 30, 0, 0, 0, 4, 0, 150), "mosaic", 3.0, 2
    )
    pooled = injection.pooled_row([first, second])
    assert pooled["seed"] == "all" and pooled["seconds"] == 5.0
    assert pooled["completeness"] == pytest.approx(36 / 40)  # not the mean of 0.9 and 0.9
    assert pooled["pair_recall"] == pytest.approx(0.5)  # the second seed has no pairs
    assert pooled["pair_recall_resolved"] is None
    assert pooled["shattered"] == "1/7"
    assert (pooled["knotty_shattered"], pooled["clumpy_shattered"]) == ("2/4", "0/4")
    assert pooled["spurious_fraction"] == pytest.approx(1 / 200)
    assert pooled["counts"]["completeness"] == 40 and pooled["n_injected"] == 17 + 34


def test_an_image_that_is_not_there_is_an_error_not_an_empty_table(injection, tmp_path):
    """A mistyped ``--images`` name (or a checkout without shared/data) used to give an
    empty table and exit 0."""
    with pytest.raises(SystemExit, match="no real image nosuch_image in"):
        injection.mosaics(tmp_path, ["nosuch_image"], 64, [])
