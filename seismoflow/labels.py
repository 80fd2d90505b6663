"""Learning classes, and the one table that maps catalogue event types onto them.

A class label comes from the catalogue's event type (QuakeML 1.2 ``EventType``), never from
where a recording came from. :data:`EVENT_TYPE_CLASS` holds every value of the QuakeML 1.2
enumeration (44 values) plus a few non-standard spellings met in real catalogues; each maps
to one of :data:`CLASSES` or to ``None`` (the event is kept in the store but not used for
training). ``noise`` never comes from a catalogue: noise examples are windows with no
catalogued event nearby (``seismoflow.featurize.noise``).

Why some choices (``STORE.md``, section "Classes", shows the table):

- induced and triggered events (reservoir loading, fluid injection or extraction, rock
  bursts) radiate like tectonic earthquakes (shear slip): ``earthquake``;
- every blast, including quarry blasts, road cuts and mining explosions: ``explosion``;
- avalanches, slides, rock falls and debris flows: ``surface_event``;
- ``other event``: ``surface_event``. PNSN (the archive's earthquake and explosion source)
  publishes its "su" surface events under this type, and the archive maps ESEC outburst
  floods onto it; ``labels.csv`` classes both as surface events;
- collapses, crashes, atmospheric and acoustic sources, ice quakes, meteorites, volcanic
  eruptions, ``anthropogenic event`` and the ``not ...`` values are too mixed or too rare
  to form or join a class: ``None``.
"""

from __future__ import annotations

from typing import Final

CLASSES: Final[tuple[str, ...]] = ("earthquake", "explosion", "surface_event", "noise")
EVENT_CLASSES: Final[tuple[str, ...]] = CLASSES[:3]
NOISE: Final[str] = "noise"

# QuakeML 1.2 EventType, in the order of the standard, -> class (None: not used to learn).
QUAKEML_EVENT_TYPES: Final[dict[str, str | None]] = {
    "not existing": None,
    "not reported": None,
    "earthquake": "earthquake",
    "anthropogenic event": None,
    "collapse": None,
    "cavity collapse": None,
    "mine collapse": None,
    "building collapse": None,
    "explosion": "explosion",
    "accidental explosion": "explosion",
    "chemical explosion": "explosion",
    "controlled explosion": "explosion",
    "experimental explosion": "explosion",
    "industrial explosion": "explosion",
    "mining explosion": "explosion",
    "quarry blast": "explosion",
    "road cut": "explosion",
    "blasting levee": "explosion",
    "nuclear explosion": "explosion",
    "induced or triggered event": "earthquake",
    "rock burst": "earthquake",
    "reservoir loading": "earthquake",
    "fluid injection": "earthquake",
    "fluid extraction": "earthquake",
    "crash": None,
    "plane crash": None,
    "train crash": None,
    "boat crash": None,
    "other event": "surface_event",
    "atmospheric event": None,
    "sonic boom": None,
    "sonic blast": None,
    "acoustic noise": None,
    "thunder": None,
    "avalanche": "surface_event",
    "snow avalanche": "surface_event",
    "debris avalanche": "surface_event",
    "hydroacoustic event": None,
    "ice quake": None,
    "slide": "surface_event",
    "landslide": "surface_event",
    "rockslide": "surface_event",
    "meteorite": None,
    "volcanic eruption": None,
}

# Spellings outside QuakeML 1.2 that catalogues (ComCat, ESEC, PNSN) use.
EXTRA_EVENT_TYPES: Final[dict[str, str | None]] = {
    "rock fall": "surface_event",
    "rockfall": "surface_event",
    "mudslide": "surface_event",
    "debris flow": "surface_event",
    "lahar": "surface_event",
    "surface event": "surface_event",
    "ice avalanche": "surface_event",
    "induced earthquake": "earthquake",
    "mining blast": "explosion",
    "": None,
}

EVENT_TYPE_CLASS: Final[dict[str, str | None]] = {**QUAKEML_EVENT_TYPES, **EXTRA_EVENT_TYPES}


def event_class(event_type: str) -> str | None:
    """The learning class of a catalogue event type, or ``None`` if it is not learned.

    Case and surrounding blanks are ignored. An event type outside the table raises
    ``KeyError`` naming it: add it to ``EVENT_TYPE_CLASS`` (and ``STORE.md``) rather than
    letting it fall silently into a class.
    """
    key = " ".join(str(event_type).strip().lower().split())
    try:
        return EVENT_TYPE_CLASS[key]
    except KeyError:
        raise KeyError(
            f"event type {event_type!r} is not in seismoflow.labels.EVENT_TYPE_CLASS; "
            "add it to the table (and STORE.md) with its class or None"
        ) from None


def class_table_markdown() -> str:
    """The table as markdown rows (what ``STORE.md`` shows)."""
    lines = ["| event type | class | QuakeML 1.2 |", "|---|---|---|"]
    for name, cls in EVENT_TYPE_CLASS.items():
        if name:
            std = "yes" if name in QUAKEML_EVENT_TYPES else "no"
            lines.append(f"| {name} | {cls or '(not learned)'} | {std} |")
    return "\n".join(lines)
