"""A local FDSN web service (fdsnws-dataselect/1, -station/1, -event/1) for tests.

It serves a folder holding an SDS archive, a StationXML file and a QuakeML file on
127.0.0.1 so that ObsPy's real ``Client`` (and our fetch code) talk HTTP to something real,
with switchable faults (503/429 with ``Retry-After``, slow answers, truncated bodies,
connection resets, 413 for big bulk requests, restricted networks behind Digest auth)::

    from tests.fdsnws import FDSNService, Faults

    with FDSNService(archive, Faults(unavailable=0.2)) as svc:
        client = obspy.clients.fdsn.Client(base_url=svc.url)

Standalone: ``python -m tests.fdsnws --root DIR --port N`` (see ``--help``).
"""

from tests.fdsnws.faults import Faults, RequestRecord
from tests.fdsnws.server import FDSNService

__all__ = ["FDSNService", "Faults", "RequestRecord"]
