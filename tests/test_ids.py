"""FDSN code validation: nothing invalid may name a path or group."""

import pytest

from seismoflow.ids import ChannelId, InvalidCodeError, normalize_location, validate_event_id


def test_valid_codes_round_trip() -> None:
    ch = ChannelId.parse("GG.LH01.10.EHE")
    assert (ch.network, ch.station, ch.location, ch.channel) == ("GG", "LH01", "10", "EHE")
    assert ch.nslc == "GG.LH01.10.EHE"
    assert ch.channel_set == "EH?"
    assert ch.component == "E"
    assert ChannelId.parse("UW.VFP..EHZ").location == ""
    assert ChannelId.parse("XX.ABC.--.B_H_Z").location == ""


@pytest.mark.parametrize(
    "nslc",
    [
        "../x.STA..BHZ",
        "NE/T.STA..BHZ",
        "NET.ST/A..BHZ",
        "NET...BHZ",
        "NET.STA..bhz",
        "NET.STA..BH",
        "NET.STA.. BHZ",
        "NET.STA.LOC.BHZ.X",
        "NETWORKXX.STA..BHZ",
        "NET.S..TA..BHZ",
        "NET.STA..B/Z",
    ],
)
def test_invalid_codes_are_rejected_with_the_input_named(nslc: str) -> None:
    with pytest.raises(InvalidCodeError) as err:
        ChannelId.parse(nslc)
    assert "invalid" in str(err.value)


def test_location_blank_forms() -> None:
    assert normalize_location("--") == ""
    assert normalize_location("  ") == ""
    assert normalize_location("00") == "00"


def test_event_ids() -> None:
    assert validate_event_id("smi:local/pnsn/uw61377746") == "smi:local/pnsn/uw61377746"
    for bad in ["../etc/passwd", "uw61377746", "smi:local", "smi:lo cal/x"]:
        with pytest.raises(InvalidCodeError):
            validate_event_id(bad)
