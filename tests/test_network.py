import json

import numpy as np
import pandas as pd
import pytest

from survey_seg.evaluate import score_catalog
from survey_seg.inference import DEFAULT_MODEL
from survey_seg.masks import MaskBit
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.store import OutputStore

SPURIOUS = int(MaskBit.CR | MaskBit.STREAK | MaskBit.GHOST | MaskBit.BAD)


@pytest.fixture(scope="module")
def unet_whole(small_simulation, tmp_path_factory):
    _, mosaic = small_simulation
    out = tmp_path_factory.mktemp("unet") / "whole"
    run_survey(mosaic, out, RunConfig(method="unet", tile_size=512, halo=64))
    return out


def test_default_method_beats_sep_on_blends_and_catalogs_no_artefact(small_simulation, unet_whole):
    import sep

    sim, _ = small_simulation
    sources = pd.read_parquet(unet_whole / "sources.parquet")
    ours = score_catalog(sources, sim.truth_sources)
    image = np.nan_to_num(sim.image.astype(np.float64))
    invalid = ~np.isfinite(sim.image)
    background = sep.Background(image, mask=invalid)
    objects = sep.extract(
        image - background.back(), 1.5, err=background.globalrms, mask=invalid, minarea=5
    )
    theirs = score_catalog(pd.DataFrame({"x": objects["x"], "y": objects["y"]}), sim.truth_sources)
    assert ours.blend_recall > theirs.blend_recall + 0.1
    assert ours.completeness > 0.85
    x = np.rint(sources["x"]).astype(int).clip(0, sim.image.shape[1] - 1)
    y = np.rint(sources["y"]).astype(int).clip(0, sim.image.shape[0] - 1)
    on_artefact = (sim.truth_mask[y, x] & SPURIOUS) != 0
    assert on_artefact.sum() == 0


def test_network_tiling_agrees_with_the_whole_image(small_simulation, unet_whole, tmp_path):
    _, mosaic = small_simulation
    tiled = tmp_path / "tiled"
    run_survey(mosaic, tiled, RunConfig(method="unet", tile_size=128, halo=64))
    a = pd.read_parquet(tiled / "sources.parquet")
    b = pd.read_parquet(unet_whole / "sources.parquet")
    key_a = set(zip(a["x_peak"], a["y_peak"], strict=True))
    key_b = set(zip(b["x_peak"], b["y_peak"], strict=True))
    # convolution sums may round differently with the window size: allow a rare flip
    assert len(key_a ^ key_b) <= max(2, 0.03 * len(key_b))
    mask_a, _ = OutputStore(tiled).read_masks()
    mask_b, _ = OutputStore(unet_whole).read_masks()
    detected_a = (mask_a & int(MaskBit.DETECTED)) != 0
    detected_b = (mask_b & int(MaskBit.DETECTED)) != 0
    assert np.mean(detected_a != detected_b) < 0.002


def test_tile_table_splits_the_time_of_each_tile(unet_whole):
    tiles = pd.read_parquet(unet_whole / "tiles.parquet")
    assert (tiles["seconds_network"] > 0).all()
    assert (tiles["seconds_network"] < tiles["seconds"]).all()
    assert (tiles["seconds_read"] > 0).all() and (tiles["seconds_write"] > 0).all()
    summary = json.loads((unet_whole / "manifest.json").read_text())["summary"]
    assert 0 < summary["merge_seconds"] < summary["wall_seconds"]


def test_manifest_records_the_flips_the_network_ran_with(unet_whole):
    method = json.loads((unet_whole / "manifest.json").read_text())["method"]
    assert method["flips"] == json.loads(DEFAULT_MODEL.read_text()).get("test_time_flips", 1)
