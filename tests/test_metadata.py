"""The streaming StationXML reader gives ObsPy's table, on the real archive and edge cases."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import obspy
import pandas as pd
import pytest

from seismoflow.archive.metadata import inventory_table, read_channel_table


def obspy_table(raw: bytes) -> pd.DataFrame:
    return inventory_table(obspy.read_inventory(io.BytesIO(raw)))


def test_real_stationxml_rows_equal_obspy(archive: Path) -> None:
    path = archive / "stations.xml.gz"
    ours = read_channel_table(path)
    assert len(ours) > 1000  # 1296 channel and station epochs
    pd.testing.assert_frame_equal(ours, obspy_table(gzip.decompress(path.read_bytes())))
    # bytes (as fetched) and a path read the same
    pd.testing.assert_frame_equal(read_channel_table(path.read_bytes()), ours)


EDGE_CASES = b"""<?xml version="1.0" encoding="UTF-8"?>
<FDSNStationXML xmlns="http://www.fdsn.org/xml/station/1" schemaVersion="1.1">
  <Source>test</Source><Created>2024-01-01T00:00:00Z</Created>
  <Network code="XX" startDate="2000-01-01T00:00:00">
    <Station code=" AB1 " startDate="2010-01-01T00:00:00" endDate="2599-12-31T23:59:59">
      <Description>Edge, case</Description>
      <Latitude>46.5</Latitude><Longitude>-121.25</Longitude><Elevation>1200.5</Elevation>
      <Site><Name>site</Name></Site>
      <Channel code="HHZ" locationCode="" startDate="2010-01-01T00:00:00.123456Z">
        <Latitude>46.5</Latitude><Longitude>-121.25</Longitude><Elevation>1200.5</Elevation>
        <Depth>0</Depth><Azimuth>0</Azimuth><Dip>-90</Dip>
        <SampleRate>100</SampleRate>
        <Response>
          <InstrumentSensitivity><Value>1e9</Value><Frequency>1</Frequency>
            <InputUnits><Name>M/S</Name></InputUnits><OutputUnits><Name>COUNTS</Name></OutputUnits>
          </InstrumentSensitivity>
          <Stage number="1">
            <StageGain><Value>1e9</Value><Frequency>1</Frequency></StageGain>
          </Stage>
        </Response>
      </Channel>
      <Channel code="HHN" locationCode="00" startDate="2010-01-01T00:00:00">
        <Latitude>46.6</Latitude><Longitude>-121.3</Longitude><Elevation>1190</Elevation>
        <Depth>10</Depth>
        <Response>
          <InstrumentSensitivity><Value>1e9</Value><Frequency>1</Frequency>
            <InputUnits><Name>M/S</Name></InputUnits><OutputUnits><Name>COUNTS</Name></OutputUnits>
          </InstrumentSensitivity>
        </Response>
      </Channel>
    </Station>
    <Station code="AB2" startDate="2011-01-01T00:00:00">
      <Latitude>-10</Latitude><Longitude>20</Longitude><Elevation>0</Elevation>
      <Site><Name>two</Name></Site>
    </Station>
  </Network>
  <Network code="YY"><Station code="C" startDate="2012-05-06T07:08:09.5">
    <Latitude>1</Latitude><Longitude>2</Longitude><Elevation>3</Elevation>
    <Site><Name>c</Name></Site>
    <Channel code="BHZ" locationCode="10" startDate="2012-05-06T07:08:09.5"
        endDate="2013-01-01T00:00:00"><Latitude>1</Latitude><Longitude>2</Longitude>
      <Elevation>3</Elevation><Depth>0</Depth><SampleRate>40</SampleRate></Channel>
  </Station></Network>
</FDSNStationXML>
"""


def test_edge_cases_equal_obspy() -> None:
    """A channel without a sampling rate, responses with and without stages, fractional
    and far-future dates, a station without channels, padded codes, gzip."""
    ours = read_channel_table(EDGE_CASES)
    pd.testing.assert_frame_equal(ours, obspy_table(EDGE_CASES))
    assert list(ours["has_response"]) == [False, True, False, False, False, False]
    assert ours.iloc[0]["station"] == "AB1"
    pd.testing.assert_frame_equal(read_channel_table(gzip.compress(EDGE_CASES)), ours)


def test_channel_with_incomplete_coordinates_is_kept() -> None:
    """ObsPy drops a channel epoch lacking any of latitude, longitude, elevation or depth
    (with a warning), so its data would read as having no metadata; the table keeps it,
    with the station's coordinates where the channel's are missing or NaN."""
    doc = EDGE_CASES.replace(
        b"<Latitude>46.6</Latitude><Longitude>-121.3</Longitude><Elevation>1190</Elevation>"
        b"\n        <Depth>10</Depth>",
        b"<Latitude>46.6</Latitude><Longitude>NaN</Longitude>",
    )
    assert doc != EDGE_CASES
    ours = read_channel_table(doc)
    hhn = ours[ours["channel"] == "HHN"].iloc[0]
    assert (hhn["latitude"], hhn["longitude"], hhn["elevation_m"]) == (46.6, -121.25, 1200.5)
    assert pd.isna(hhn["depth_m"]) and hhn["sampling_rate"] != hhn["sampling_rate"]
    with pytest.warns(UserWarning, match="complete set of coordinates"):
        theirs = obspy_table(doc)
    assert "HHN" not in set(theirs["channel"])
    pd.testing.assert_frame_equal(
        ours[ours["channel"] != "HHN"].reset_index(drop=True), theirs.reset_index(drop=True)
    )


def test_other_formats_go_through_obspy(tmp_path: Path) -> None:
    """A format other than FDSN StationXML (here FDSN station text, written by ObsPy) is
    read by ObsPy."""
    # (the text format at channel level needs every station to have a channel)
    inv = obspy.read_inventory(io.BytesIO(EDGE_CASES)).select(station="AB1")
    path = tmp_path / "inventory.txt"
    inv.write(str(path), format="STATIONTXT", level="channel")
    ours = read_channel_table(path)
    pd.testing.assert_frame_equal(ours, inventory_table(obspy.read_inventory(str(path))))
    assert list(ours["channel"]) == ["", "HHZ", "HHN"]


def test_unreadable_document_raises() -> None:
    with pytest.raises(Exception):  # noqa: B017 - ObsPy's own error for an unknown format
        read_channel_table(b"not xml at all")
