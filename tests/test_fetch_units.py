"""Fetch numerics without a service: retry policy, error classes, selection, record split."""

from __future__ import annotations

import io
import random

import numpy as np
import obspy
import pandas as pd
import pytest
from obspy.clients.fdsn.header import FDSNBadRequestException, FDSNNoDataException

from seismoflow.fdsn.client import (
    FetchStats,
    RequestTooLarge,
    RetryPolicy,
    TransientError,
    is_transient,
    resolve_provider,
    with_retries,
)
from seismoflow.fdsn.run import Selection, TruncatedData, split_records, staged_name
from seismoflow.fdsn.select import (
    Region,
    batches,
    choose_channel_set,
    continuous_candidates,
    keep_best_set,
    next_lines,
)
from seismoflow.times import NAT, NS_PER_DAY, to_ns


def test_retry_after_is_a_lower_bound_and_backoff_is_capped() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(attempts=5, base_s=1.0, cap_s=8.0)
    assert policy.delay(1, 30.0, rng) == 30.0  # the server's Retry-After wins
    delays = [policy.delay(a, None, rng) for a in range(1, 8)]
    assert all(0.5 * min(8.0, 2 ** (a - 1)) <= d <= min(8.0, 2 ** (a - 1)) for a, d in
               zip(range(1, 8), delays, strict=True))  # fmt: skip
    assert max(delays) <= 8.0


def test_transient_errors_are_retried_final_ones_are_not() -> None:
    assert is_transient(TransientError("503", 503, 1.0))
    assert is_transient(ConnectionResetError())
    for final in (FDSNNoDataException("x"), FDSNBadRequestException("x"), RequestTooLarge("x")):
        assert not is_transient(final)
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("HTTP 429", 429, retry_after=2.0)
        return "ok"

    stats = FetchStats()
    out = with_retries(flaky, RetryPolicy(5, 0.01, 0.1), stats, "t", sleep=waits.append)
    assert out == "ok" and len(calls) == 3
    assert waits == [2.0, 2.0]  # Retry-After honoured
    assert stats.as_dict()["retried"] == 2 and stats.as_dict()["retried_429"] == 2

    def bad() -> str:
        calls.append(1)
        raise FDSNBadRequestException("bad parameter")

    calls.clear()
    with pytest.raises(FDSNBadRequestException):
        with_retries(bad, RetryPolicy(5, 0.01, 0.1), stats, "t", sleep=waits.append)
    assert len(calls) == 1  # a 400 is final

    def down() -> str:
        raise TransientError("HTTP 503", 503)

    with pytest.raises(TransientError):
        with_retries(down, RetryPolicy(3, 0.0, 0.0), stats, "t", sleep=lambda s: None)
    assert stats.as_dict()["failed_after_retries"] == 1


def test_providers_by_name_or_url() -> None:
    assert resolve_provider("EARTHSCOPE").startswith("https://")
    assert resolve_provider("gfz").startswith("https://")
    assert resolve_provider("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="short names"):
        resolve_provider("not a provider")


def _channels(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "network": "XX",
            "station": "AAA",
            "location": [r[0] for r in rows],
            "channel": [r[1] for r in rows],
            "start_ns": 0,
            "end_ns": NAT,
            "latitude": 1.0,
            "longitude": 2.0,
        }
    )


def test_channel_priority_prefers_three_components() -> None:
    prio = ["HH?", "BH?", "EH?"]
    both = _channels([("", "HHZ"), ("00", "BHZ"), ("00", "BHN"), ("00", "BHE")])
    assert choose_channel_set(both, prio) == ("00", ["BHE", "BHN", "BHZ"])
    full = _channels([("", "HHZ"), ("", "HHN"), ("", "HHE"), ("", "BHZ"), ("", "BH1"),
                      ("", "BH2")])  # fmt: skip
    assert choose_channel_set(full, prio) == ("", ["HHE", "HHN", "HHZ"])
    assert choose_channel_set(_channels([("10", "EHZ")]), prio) == ("10", ["EHZ"])
    assert choose_channel_set(_channels([("", "LHZ")]), prio) is None
    found = {("", "HHZ"), ("00", "HHZ"), ("00", "HHN"), ("00", "HHE"), ("", "BHZ")}
    assert keep_best_set(found, prio) == {("00", "HHZ"), ("00", "HHN"), ("00", "HHE")}


def test_regions_widen_and_refuse_mixtures() -> None:
    with pytest.raises(ValueError, match="either a box"):
        Region(minlatitude=1, latitude=2, longitude=3, maxradius=1)
    with pytest.raises(ValueError, match="needs --latitude"):
        Region(latitude=2)
    circle = Region(latitude=46, longitude=-122, maxradius=1).widened(2)
    assert circle.maxradius == 3
    box = Region(45, 47, -123, -121).widened(1)
    assert box.minlatitude == 44 and box.maxlatitude == 48
    assert box.minlongitude is not None and box.minlongitude < -124  # stretched by latitude
    assert Region(85, 89, 0, 10).widened(2).minlongitude == -180
    with pytest.raises(ValueError, match="must be after"):
        Selection(10, 5)


def test_continuous_lines_are_station_days() -> None:
    ch = _channels([("", "HHZ"), ("", "HHN"), ("", "HHE")])
    start = to_ns("2024-02-03T05:00:00")
    candidates = continuous_candidates(ch, ["HH?"], start, start + NS_PER_DAY)
    assert len(candidates) == 2 and all(len(c) == 1 for c in candidates)
    lines = [ln for c in candidates for ln in c[0]]
    assert len(lines) == 6  # two partial UTC days x three channels
    assert lines[0].start_ns == start and lines[-1].end_ns == start + NS_PER_DAY
    assert {ln.end_ns - ln.start_ns for ln in lines} == {19 * 3600 * 10**9, 5 * 3600 * 10**9}
    grouped = batches(lines, 2, by_event=False)
    assert [len(b) for b in grouped] == [2, 1, 2, 1]
    names = {staged_name(ln) for ln in lines}
    assert len(names) == len(lines)  # one file per line: split requests never share a file


def test_split_records_detects_truncation() -> None:
    tr = obspy.Trace(np.arange(5000, dtype=np.int32))
    tr.stats.update({"network": "XX", "station": "AAA", "channel": "HHZ", "sampling_rate": 100})
    buf = io.BytesIO()
    tr.write(buf, format="MSEED", reclen=512, encoding="STEIM2")
    body = buf.getvalue()
    records = split_records(body)
    assert sum(r.length for r in records) == len(body)
    assert records[0].network == "XX" and records[0].channel == "HHZ"
    with pytest.raises(TruncatedData):
        split_records(body[: len(body) - 100])
    with pytest.raises(TruncatedData):
        split_records(b"<html>503 Service Unavailable</html>")


def test_a_set_without_data_hands_over_to_the_next() -> None:
    ch = _channels([("", "HHZ"), ("", "HHN"), ("", "HHE"), ("", "BHZ")])
    (cand,) = continuous_candidates(ch, ["HH?", "BH?"], 0, 3600 * 10**9)
    assert [len(s) for s in cand] == [3, 1]
    todo, answered = next_lines([cand], "p", {})
    assert [ln.channel for ln in todo] == ["HHE", "HHN", "HHZ"] and answered == 0
    nodata = {ln.ledger_key("p"): "nodata" for ln in cand[0]}
    todo, answered = next_lines([cand], "p", nodata)
    assert [ln.channel for ln in todo] == ["BHZ"] and answered == 3
    some = {**nodata, cand[0][0].ledger_key("p"): "data"}
    assert next_lines([cand], "p", some) == ([], 3)  # one component with data: set done
    failed = {**nodata, cand[0][1].ledger_key("p"): "failed"}
    todo, _ = next_lines([cand], "p", failed)
    assert todo == [cand[0][1]]  # a failed line is asked again, not skipped over


def test_guards_survive_obspys_opener() -> None:
    """PoliteClient hooks ObsPy's private ``_set_opener`` (also re-run when credentials are
    set): the redirect guard and the deadline's socket tracking must be in every opener.
    This fails when ObsPy renames or stops using it."""
    import gzip

    from seismoflow.fdsn.client import AnswerTooLarge, PoliteClient
    from seismoflow.fdsn.guard import (
        SameOriginRedirects,
        TrackedHTTPHandler,
        TrackedHTTPSHandler,
        gunzip,
    )

    client = PoliteClient("http://127.0.0.1:8080", _discover_services=False)
    wanted = {SameOriginRedirects, TrackedHTTPHandler, TrackedHTTPSHandler}
    assert wanted <= {type(h) for h in client._url_opener.handlers}
    client.set_credentials("user", "secret")
    assert wanted <= {type(h) for h in client._url_opener.handlers}
    # gzip: several members inflate in order; past the cap is refused, not inflated.
    body = gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 1000)
    assert gunzip(io.BytesIO(body), "http://x/q", 2000) == b"a" * 1000 + b"b" * 1000
    with pytest.raises(AnswerTooLarge, match="inflates"):
        gunzip(io.BytesIO(body), "http://x/q", 1999)
    with pytest.raises(TransientError, match="truncated gzip"):
        gunzip(io.BytesIO(body[:-30]), "http://x/q", None)
