"""The local FDSN web service (tests/fdsnws) against ObsPy's real FDSN client.

Every answer is compared with reading the shared archive directly: events.xml filtered by
hand, stations.xml.gz through obspy, the SDS day files through obspy's SDS client.
"""

from __future__ import annotations

import http.client
import io
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import pytest
from obspy import UTCDateTime
from obspy.clients.fdsn import Client
from obspy.clients.fdsn.header import (
    FDSNException,
    FDSNNoDataException,
    FDSNRequestTooLargeException,
    FDSNServiceUnavailableException,
    FDSNTimeoutException,
    FDSNTooManyRequestsException,
    FDSNUnauthorizedException,
)
from obspy.clients.filesystem.sds import Client as SDSClient
from obspy.geodetics import locations2degrees

from tests.fdsnws import Faults, FDSNService

REPO = Path(__file__).resolve().parents[1]
T = UTCDateTime

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def svc(archive: Path) -> Iterator[FDSNService]:
    """One service over the shared archive for the whole module (faults off between tests)."""
    with FDSNService(archive) as service:
        yield service


@pytest.fixture(scope="module")
def client(svc: FDSNService) -> Client:
    return Client(base_url=svc.url, timeout=30)


@pytest.fixture(scope="module")
def inventory(archive: Path) -> obspy.Inventory:
    return obspy.read_inventory(str(archive / "stations.xml.gz"))


@pytest.fixture(scope="module")
def catalog(archive: Path) -> obspy.Catalog:
    return obspy.read_events(str(archive / "events.xml"))


@pytest.fixture(scope="module")
def sds(archive: Path) -> SDSClient:
    return SDSClient(str(archive / "sds"))


@contextmanager
def faulty(svc: FDSNService, faults: Faults) -> Iterator[FDSNService]:
    svc.faults = faults
    try:
        yield svc
    finally:
        svc.faults = Faults()


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def http_post(url: str, body: bytes) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, data=body, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --- discovery -----------------------------------------------------------------------------


def test_discovery_finds_services_parameters_catalogs(svc: FDSNService) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ObsPy warns about any WADL it cannot fully use
        c = Client(base_url=svc.url)
    assert {"dataselect", "station", "event"} <= set(c.services)
    discovered = {r.path for r in svc.requests if r.status == 200}
    assert {f"/fdsnws/{s}/1/application.wadl" for s in ("dataselect", "station", "event")} <= (
        discovered
    )
    assert c.services["eida-auth"] is True
    ds = c.services["dataselect"]
    assert {"starttime", "endtime", "network", "station", "location", "channel"} <= set(ds)
    assert ds["starttime"]["type"] is UTCDateTime and ds["minimumlength"]["type"] is float
    assert c.services["station"]["level"]["options"] == ["network", "station", "channel",
                                                         "response"]  # fmt: skip
    assert {"eventtype", "minmagnitude", "maxradius", "orderby"} <= set(c.services["event"])
    assert c.services["available_event_catalogs"] == {"pnsn", "esec"}
    assert "uw" in c.services["available_event_contributors"]
    assert c.get_webservice_version("dataselect") == [1, 1, 0]
    assert c.get_webservice_version("event") == [1, 2, 0]


# --- events --------------------------------------------------------------------------------


def _expected_events(catalog: obspy.Catalog, **f: Any) -> list[str]:
    """events.xml filtered by hand, newest first (the FDSN default order)."""
    keep = []
    for e in catalog:
        o = e.preferred_origin() or e.origins[0]
        m = e.preferred_magnitude() or (e.magnitudes[0] if e.magnitudes else None)
        mag = m.mag if m else None
        if "starttime" in f and o.time < f["starttime"]:
            continue
        if "endtime" in f and o.time > f["endtime"]:
            continue
        if "box" in f:
            lat0, lat1, lon0, lon1 = f["box"]
            if not (lat0 <= o.latitude <= lat1 and lon0 <= o.longitude <= lon1):
                continue
        if "radius" in f:
            lat, lon, r = f["radius"]
            if locations2degrees(lat, lon, o.latitude, o.longitude) > r:
                continue
        if "minmagnitude" in f and (mag is None or mag < f["minmagnitude"]):
            continue
        if "maxmagnitude" in f and (mag is None or mag > f["maxmagnitude"]):
            continue
        if "types" in f and str(e.event_type) not in f["types"]:
            continue
        depth_km = o.depth / 1000 if o.depth is not None else None
        if "depth" in f and (depth_km is None or not f["depth"][0] <= depth_km <= f["depth"][1]):
            continue
        keep.append((o.time, str(e.resource_id)))
    return [rid for _, rid in sorted(keep, reverse=True)]


EVENT_CASES = [
    ({"starttime": T("2019-01-01"), "endtime": T("2021-06-30")}, {}),
    ({"minlatitude": 45.0, "maxlatitude": 48.5, "minlongitude": -123.0, "maxlongitude": -120.0},
     {"box": (45.0, 48.5, -123.0, -120.0)}),
    ({"latitude": 46.2, "longitude": -122.2, "maxradius": 1.5}, {"radius": (46.2, -122.2, 1.5)}),
    ({"minmagnitude": 1.5}, {}),
    ({"maxmagnitude": 1.0}, {}),
    ({"eventtype": "landslide,Snow Avalanche"}, {"types": {"landslide", "snow avalanche"}}),
    ({"eventtype": "*avalanche"},
     {"types": {"avalanche", "snow avalanche", "debris avalanche"}}),
    ({"eventtype": "explosion", "starttime": T("2020-01-01")},
     {"types": {"explosion"}, "starttime": T("2020-01-01")}),
    ({"mindepth": 5.0, "maxdepth": 20.0}, {"depth": (5.0, 20.0)}),
]  # fmt: skip


@pytest.mark.parametrize(("query", "extra"), EVENT_CASES)
def test_events_equal_filtering_events_xml(
    client: Client, catalog: obspy.Catalog, query: dict[str, Any], extra: dict[str, Any]
) -> None:
    expected = _expected_events(catalog, **{**query, **extra})
    assert expected, "a filter case must select something"
    got = client.get_events(**query)
    assert [str(e.resource_id) for e in got] == expected
    first = next(e for e in catalog if e.resource_id == got[0].resource_id)
    assert got[0].origins[0].time == first.origins[0].time
    assert got[0].event_type == first.event_type


def test_events_order_limit_offset_and_no_data(client: Client, catalog: obspy.Catalog) -> None:
    newest_first = _expected_events(catalog)
    assert len(newest_first) == len(catalog) == 214
    asc = client.get_events(orderby="time-asc", limit=5, offset=3)
    assert [str(e.resource_id) for e in asc] == newest_first[::-1][2:7]
    by_mag = client.get_events(orderby="magnitude", minmagnitude=0.0)
    mags = [e.magnitudes[0].mag for e in by_mag]
    assert mags == sorted(mags, reverse=True) and len(mags) == 76
    one = client.get_events(eventid=newest_first[0])
    assert [str(e.resource_id) for e in one] == newest_first[:1]
    with pytest.raises(FDSNNoDataException):
        client.get_events(eventtype="volcanic eruption")
    with pytest.raises(FDSNNoDataException):
        client.get_events(starttime=T("1990-01-01"), endtime=T("1991-01-01"))


# --- stations ------------------------------------------------------------------------------


def _station_keys(inv: obspy.Inventory) -> set[tuple[str, str, str]]:
    return {(n.code, s.code, str(s.start_date)) for n in inv for s in n}


def _channel_keys(inv: obspy.Inventory) -> set[tuple[str, str]]:
    return {(f"{n.code}.{s.code}.{c.location_code}.{c.code}", str(c.start_date))
            for n in inv for s in n for c in s}  # fmt: skip


def test_stations_at_each_level(client: Client, inventory: obspy.Inventory) -> None:
    ref = inventory.select(network="CI")
    net = client.get_stations(network="CI", level="network")
    assert sorted(n.code for n in net) == sorted(n.code for n in ref)
    assert all(not n.stations for n in net)

    sta = client.get_stations(network="CI", level="station")
    assert _station_keys(sta) == _station_keys(ref)
    assert all(not s.channels for n in sta for s in n)

    cha = client.get_stations(network="CI", station="C*", channel="BH?", level="channel")
    ref_cha = inventory.select(network="CI", station="C*", channel="BH?")
    assert _channel_keys(cha) == _channel_keys(ref_cha) and _channel_keys(cha)
    assert all(c.response is None for n in cha for s in n for c in s)

    resp = client.get_stations(network="CI", station="C*", channel="BH?", level="response")
    assert _channel_keys(resp) == _channel_keys(ref_cha)
    originals = {(c.code, str(c.start_date), s.code): c for n in ref_cha for s in n for c in s}
    for n in resp:
        for s in n:
            for c in s:
                orig = originals[(c.code, str(c.start_date), s.code)]
                assert len(c.response.response_stages) == len(orig.response.response_stages)
                assert (c.response.instrument_sensitivity.value
                        == orig.response.instrument_sensitivity.value)  # fmt: skip

    text = client.get_stations(network="CI", station="C*", channel="BH?", level="channel",
                               format="text")  # fmt: skip
    assert _channel_keys(text) == _channel_keys(ref_cha)


def test_stations_box_radius_time(client: Client, inventory: obspy.Inventory) -> None:
    every = {(n.code, s.code, str(s.start_date)): s for n in inventory for s in n}
    box = client.get_stations(minlatitude=45.5, maxlatitude=47.0, minlongitude=-123.0,
                              maxlongitude=-121.0)  # fmt: skip
    assert _station_keys(box) == {
        k for k, s in every.items()
        if 45.5 <= s.latitude <= 47.0 and -123.0 <= s.longitude <= -121.0
    }  # fmt: skip
    assert len(_station_keys(box)) > 5

    radius = client.get_stations(latitude=46.2, longitude=-122.2, maxradius=0.5)
    assert _station_keys(radius) == {
        k for k, s in every.items()
        if locations2degrees(46.2, -122.2, s.latitude, s.longitude) <= 0.5
    }  # fmt: skip
    assert len(_station_keys(radius)) > 2

    t0, t1 = T("2020-03-28"), T("2020-03-29")
    window = client.get_stations(starttime=t0, endtime=t1)
    assert _station_keys(window) == {
        k for k, s in every.items()
        if (s.end_date is None or s.end_date >= t0) and (s.start_date is None or s.start_date <= t1)
    }  # fmt: skip

    with pytest.raises(FDSNNoDataException):
        client.get_stations(network="CI", minlatitude=80.0)


def test_stations_bulk_and_matchtimeseries(client: Client, inventory: obspy.Inventory) -> None:
    t0, t1 = T("2022-01-02"), T("2022-01-03")
    bulk = [("CI", "CCA", "", "BHN", t0, t1), ("UW", "*", "*", "HHZ", t0, t1)]
    got = client.get_stations_bulk(bulk, level="channel")
    expected = inventory.select(network="CI", station="CCA", location="", channel="BHN",
                                starttime=t0, endtime=t1)  # fmt: skip
    expected += inventory.select(network="UW", channel="HHZ", starttime=t0, endtime=t1)
    assert _channel_keys(got) == _channel_keys(expected) and len(_channel_keys(got)) > 5
    # Only CI.CCA and CI.HEC have archived data on 2022-01-02.
    matched = client.get_stations(network="CI", starttime=t0, endtime=t1, level="channel",
                                  matchtimeseries=True)  # fmt: skip
    assert {k.rsplit(".", 2)[0] for k, _ in _channel_keys(matched)} == {"CI.CCA", "CI.HEC"}


# --- waveforms -----------------------------------------------------------------------------


def _by_id(st: obspy.Stream) -> dict[str, list[tuple[int, np.ndarray]]]:
    st = st.copy()
    st.merge(-1)
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for tr in sorted(st, key=lambda tr: (tr.id, tr.stats.starttime)):
        out.setdefault(tr.id, []).append((tr.stats.starttime.ns, tr.data))
    return out


def assert_same_samples(got: obspy.Stream, expected: obspy.Stream) -> None:
    a, b = _by_id(got), _by_id(expected)
    assert a.keys() == b.keys() and a
    for key in a:
        assert [t for t, _ in a[key]] == [t for t, _ in b[key]], key
        for (_, x), (_, y) in zip(a[key], b[key], strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), key


def sds_read(
    sds: SDSClient, net: str, sta: str, loc: str, cha: str, t0: UTCDateTime, t1: UTCDateTime
) -> obspy.Stream:
    """The archive's samples in ``[t0, t1]``, trimmed as ObsPy's FDSN client trims (to the
    nearest samples); ``sta`` may be a comma list, ``--`` is the empty location."""
    st = obspy.Stream()
    for code in sta.split(","):
        st += sds.get_waveforms(net, code, "" if loc == "--" else loc, cha, t0 - 1, t1 + 1)
    return st.trim(t0, t1)


WAVEFORM_CASES = [
    ("O2", "WILZ", "", "EH?", "2024-02-03T06:00:00.002", "2024-02-03T06:07:30.002"),
    ("GG", "LH0*", "10", "EHZ", "2020-03-28T13:05:00", "2020-03-28T13:09:00"),
    ("CI", "CCA,HEC", "*", "BHN", "2022-01-02T10:00:00", "2022-01-02T10:30:00"),
    ("GR", "FUR", "--", "BHN", "2015-12-27T23:55:00", "2015-12-28T00:05:00"),  # over midnight
]


@pytest.mark.parametrize(("net", "sta", "loc", "cha", "start", "end"), WAVEFORM_CASES)
def test_waveforms_equal_sds_samples(
    client: Client, sds: SDSClient, net: str, sta: str, loc: str, cha: str, start: str, end: str
) -> None:
    t0, t1 = T(start), T(end)
    got = client.get_waveforms(net, sta, loc, cha, t0, t1)
    assert_same_samples(got, sds_read(sds, net, sta, loc, cha, t0, t1))


def test_waveforms_are_whole_archive_records(client: Client, archive: Path) -> None:
    buf = io.BytesIO()
    client.get_waveforms("O2", "WILZ", "", "EHZ", T("2024-02-03T06:00:00"),
                         T("2024-02-03T06:00:10"), filename=buf)  # fmt: skip
    data = buf.getvalue()
    day = (archive / "sds/2024/O2/WILZ/EHZ.D/O2.WILZ..EHZ.D.2024.034").read_bytes()
    assert data and len(data) % 4096 == 0
    assert all(data[i : i + 4096] in day for i in range(0, len(data), 4096))


def test_waveforms_bulk_equal_sds(client: Client, sds: SDSClient) -> None:
    lines = [
        ("O2", "WILZ", "", "EHN", T("2024-02-03T05:30:00"), T("2024-02-03T05:32:00")),
        ("GG", "LH0?", "10", "EHE", T("2020-03-28T13:00:00"), T("2020-03-28T13:01:00")),
        ("CI", "HEC", "", "BHN", T("2022-01-02T23:50:00"), T("2022-01-03T00:10:00")),
    ]  # fmt: skip
    got = client.get_waveforms_bulk(lines)
    for net, sta, loc, cha, t0, t1 in lines:
        part = got.select(network=net, station=sta, location=loc, channel=cha).copy()
        part.trim(t0, t1)
        assert_same_samples(part, sds_read(sds, net, sta, loc, cha, t0, t1))


def test_no_data_and_bad_requests(client: Client, svc: FDSNService) -> None:
    with pytest.raises(FDSNNoDataException):
        client.get_waveforms("O2", "WILZ", "", "EHZ", T("2001-01-01"), T("2001-01-02"))
    with pytest.raises(FDSNNoDataException):
        client.get_waveforms("XX", "NONE", "", "BHZ", T("2024-02-03"), T("2024-02-04"))
    base = f"{svc.url}/fdsnws/dataselect/1/query?net=O2&sta=WILZ&start=2001-01-01&end=2001-01-02"
    assert http_get(base)[0] == 204
    assert http_get(base + "&nodata=404")[0] == 404
    status, _, body = http_get(f"{svc.url}/fdsnws/event/1/query?minmag=1&colour=red")
    assert status == 400 and b"colour" in body
    status, _, body = http_get(f"{svc.url}/fdsnws/station/1/query?level=everything")
    assert status == 400 and b"level" in body
    assert http_get(f"{svc.url}/fdsnws/dataselect/1/query?net=O2")[0] == 400  # no window
    assert http_get(f"{svc.url}/fdsnws/nothing/1/query")[0] == 404


# --- faults --------------------------------------------------------------------------------

O2 = ("O2", "WILZ", "", "EHZ", T("2024-02-03T06:00:00"), T("2024-02-03T06:01:00"))


def test_unavailable_and_too_many_with_retry_after(svc: FDSNService) -> None:
    with faulty(svc, Faults(unavailable=1.0, retry_after=2.5)):
        c = Client(base_url=svc.url)  # discovery is never faulted
        svc.reset_log()
        with pytest.raises(FDSNServiceUnavailableException):
            c.get_waveforms(*O2)
        status, headers, _ = http_get(f"{svc.url}/fdsnws/dataselect/1/query?net=O2&start="
                                      "2024-02-03T06:00:00&end=2024-02-03T06:01:00")  # fmt: skip
        assert status == 503 and headers["Retry-After"] == "3"
        assert c.get_events(limit=1)  # other services are not faulted
        assert svc.count(fault="unavailable") == 2 and svc.count(service="event") == 1
    with faulty(svc, Faults(too_many=1.0)):
        with pytest.raises(FDSNTooManyRequestsException):
            c.get_waveforms(*O2)
        assert svc.requests[-1].status == 429 and svc.requests[-1].fault == "too_many"
    with faulty(svc, Faults(unavailable=1.0, services=("station",))):
        with pytest.raises(FDSNServiceUnavailableException):
            c.get_stations(network="CI")
        assert c.get_waveforms(*O2)


def test_slow_answer_times_out_the_client(svc: FDSNService) -> None:
    with faulty(svc, Faults(slow=1.0, slow_seconds=1.5)):
        with pytest.raises(FDSNTimeoutException):
            Client(base_url=svc.url, timeout=0.3).get_waveforms(*O2)
        start = time.monotonic()
        st = Client(base_url=svc.url, timeout=10).get_waveforms(*O2)
        assert time.monotonic() - start >= 1.5 and st[0].stats.npts == 6001


def test_truncated_body_and_reset_connection(svc: FDSNService, client: Client) -> None:
    svc.reset_log()
    with faulty(svc, Faults(truncate=1.0)), pytest.raises(http.client.IncompleteRead):
        client.get_waveforms(*O2)
    record = svc.requests[-1]
    assert record.fault == "truncate" and record.status == 200 and record.bytes_sent > 0
    with faulty(svc, Faults(reset=1.0)), pytest.raises(FDSNException) as err:
        client.get_waveforms(*O2)
    assert "Connection" in str(err.value) or "reset" in str(err.value).lower()
    assert (svc.requests[-1].status, svc.requests[-1].fault) == (0, "reset")
    assert client.get_waveforms(*O2)  # the service is fine afterwards


def test_bulk_above_max_lines_is_413(svc: FDSNService, client: Client) -> None:
    line = list(O2)
    bulk = [tuple([*line[:3], cha, *line[4:]]) for cha in ("EHZ", "EHN", "EHE")]
    with faulty(svc, Faults(max_bulk_lines=2)):
        with pytest.raises(FDSNRequestTooLargeException):
            client.get_waveforms_bulk(bulk)
        assert svc.requests[-1].fault == "too_large"
        assert len(client.get_waveforms_bulk(bulk[:2])) == 2


def test_restricted_network_needs_credentials(
    svc: FDSNService, client: Client, sds: SDSClient
) -> None:
    ci = ("CI", "CCA", "", "BHN", T("2022-01-02T10:00:00"), T("2022-01-02T10:05:00"))
    with faulty(svc, Faults(restricted=("CI",), user="alice", password="pw")):
        with pytest.raises(FDSNNoDataException):
            client.get_waveforms(*ci)
        assert client.get_waveforms(*O2)  # open networks still answer
        authed = Client(base_url=svc.url, user="alice", password="pw")
        assert_same_samples(authed.get_waveforms(*ci), sds_read(sds, *ci))
        assert svc.requests[-1].path.endswith("/queryauth") and svc.requests[-1].status == 200
        bulk = authed.get_waveforms_bulk([ci])
        assert bulk.select(network="CI")
        with pytest.raises(FDSNUnauthorizedException):
            Client(base_url=svc.url, user="alice", password="wrong").get_waveforms(*ci)
        assert "CI" not in {n.code for n in client.get_stations(includerestricted=False)}
        assert "CI" in {n.code for n in client.get_stations(includerestricted=True)}


def test_eida_token_exchange(svc: FDSNService) -> None:
    url = f"{svc.url}/fdsnws/dataselect/1/auth"
    with faulty(svc, Faults(token="token-123", user="u1", password="p1")):
        assert http_post(url, b"token-123") == (200, b"u1:p1")
        assert http_post(url, b"forged")[0] == 403


def test_fault_draws_are_seeded(archive: Path, tmp_path: Path) -> None:
    (tmp_path / "events.xml").symlink_to(archive / "events.xml")
    faults = Faults(unavailable=0.3, too_many=0.2, services=("event",))
    rng = random.Random(7)
    expected = [{"unavailable": 503, "too_many": 429, None: 200}[faults.draw(rng)]
                for _ in range(20)]  # fmt: skip
    assert {503, 429, 200} <= set(expected)
    with FDSNService(tmp_path, faults, seed=7) as events_only:
        url = f"{events_only.url}/fdsnws/event/1/query?limit=1"
        assert [http_get(url)[0] for _ in range(20)] == expected
        assert http_get(f"{events_only.url}/fdsnws/dataselect/1/version")[0] == 404
        assert events_only.count(service="event", fault="none") == expected.count(200)


def test_standalone_module_serves(archive: Path) -> None:
    args = ["--root", str(archive), "--port", "0", "--unavailable", "1", "--retry-after", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fdsnws", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        status, _, body = http_get(f"{url}/fdsnws/dataselect/1/version")
        assert (status, body) == (200, b"1.1.0")
        status, headers, _ = http_get(f"{url}/fdsnws/dataselect/1/query?net=O2&start="
                                      "2024-02-03T06:00:00&end=2024-02-03T06:01:00")  # fmt: skip
        assert (status, headers["Retry-After"]) == (503, "4")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM stops it cleanly
