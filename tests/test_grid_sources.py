"""Gridded data from Parquet and NetCDF reads as its CSV does (the same frames, coordinates and
frequency), and a run trained on one format forecasts from another."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from test_convlstm import TINY_GRID, grid_frame

from lstmcast.errors import LstmcastError
from lstmcast.spatial.grid import read_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def netcdf(frame: pd.DataFrame, path):
    """The frame as a NetCDF-4 file with dimensions (time, lat, lon) and one variable, temp."""
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    cube = frame.assign(time=pd.to_datetime(frame["ds"])).set_index(["time", "lat", "lon"])["y"]
    xarray.Dataset({"temp": cube.to_xarray()}).to_netcdf(path, engine="h5netcdf")
    return path


def same(a, b):
    assert a.coords == b.coords and a.freq == b.freq and a.times.equals(b.times)
    np.testing.assert_array_equal(a.values, b.values)


def test_parquet_and_netcdf_grids_read_as_the_csv(tmp_path):
    pytest.importorskip("pyarrow")
    frame = grid_frame(frames=9)
    frame.to_csv(tmp_path / "g.csv", index=False)
    csv = read_grid(tmp_path / "g.csv", ["lat", "lon"])
    frame.assign(ds=pd.to_datetime(frame["ds"])).to_parquet(tmp_path / "g.parquet")
    same(read_grid(tmp_path / "g.parquet", ["lat", "lon"]), csv)
    nc = read_grid(netcdf(frame, tmp_path / "g.nc"), ["lat", "lon"], time_col="time", target=["temp"])
    assert nc.coords == [["45", "46", "47"], ["7.0", "7.5", "8.0", "8.5"]]
    same(nc, csv)


def test_a_run_trained_on_csv_forecasts_from_netcdf(tmp_path):
    frame = grid_frame()
    frame.to_csv(tmp_path / "g.csv", index=False)
    nc = netcdf(frame, tmp_path / "g.nc")
    run = tmp_path / "run"
    assert run_cli("train", tmp_path / "g.csv", "--out", run, "--grid-cols", "lat,lon", *TINY_GRID).exit_code == 0
    from_csv = run_cli("predict", tmp_path / "g.csv", "--model", run, "--out", tmp_path / "a.csv")
    assert from_csv.exit_code == 0, from_csv.stderr
    # The NetCDF names its columns time and temp: the run's columns (ds, y) are not there.
    wrong = run_cli("predict", nc, "--model", run, "--out", tmp_path / "b.csv")
    assert wrong.exit_code == 2 and "column 'ds' not found" in wrong.stderr
    import xarray
    with xarray.open_dataset(nc) as data:
        data.rename({"time": "ds", "temp": "y"}).load().to_netcdf(tmp_path / "same.nc", engine="h5netcdf")
    ok = run_cli("predict", tmp_path / "same.nc", "--model", run, "--out", tmp_path / "b.csv")
    assert ok.exit_code == 0, ok.stderr
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_a_file_that_is_not_netcdf(tmp_path):
    pytest.importorskip("xarray")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(LstmcastError, match=r"junk.nc: not a readable NetCDF file"):
        read_grid(tmp_path / "junk.nc", ["lat", "lon"])
