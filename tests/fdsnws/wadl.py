"""Discovery documents: ``application.wadl``, ``version``, event ``catalogs``/``contributors``."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from tests.fdsnws.params import PARAMS

VERSIONS = {"dataselect": "1.1.0", "station": "1.1.0", "event": "1.2.0"}
_TYPES = {
    "time": "xs:dateTime",
    "str": "xs:string",
    "float": "xs:double",
    "int": "xs:int",
    "bool": "xs:boolean",
}
_MEDIA = {
    "dataselect": ("application/vnd.fdsn.mseed",),
    "station": ("application/xml", "text/plain"),
    "event": ("application/xml",),
}


def _params(service: str) -> str:
    out = []
    for p in PARAMS[service]:
        attrs = f'name="{p.name}" style="query" type="{_TYPES[p.kind]}"'
        if p.default is not None:
            attrs += f" default={quoteattr(p.default)}"
        options = "".join(f'<option value="{o}"/>' for o in p.options)
        out.append(f"<param {attrs}>{options}</param>" if options else f"<param {attrs}/>")
    return "\n          ".join(out)


def _method(name: str, method_id: str, service: str, with_params: bool) -> str:
    request = (
        f"<request>\n          {_params(service)}\n        </request>"
        if with_params
        else '<request><representation mediaType="*/*"/></request>'
    )
    media = "".join(f'<representation mediaType="{m}"/>' for m in _MEDIA[service])
    return (
        f'<method name="{name}" id="{method_id}">\n        {request}\n'
        f'        <response status="200">{media}</response>\n'
        '        <response status="204 400 401 403 404 413 429 503">'
        '<representation mediaType="text/plain"/></response>\n      </method>'
    )


def wadl(base_url: str, service: str) -> bytes:
    """A WADL listing every query parameter the service accepts (ObsPy's discovery reads it)."""
    resources = [
        '<resource path="query">\n      '
        + _method("GET", "query", service, True)
        + "\n      "
        + _method("POST", "postQuery", service, False)
        + "\n    </resource>"
    ]
    if service == "dataselect":
        resources.append(
            '<resource path="queryauth">\n      '
            + _method("GET", "queryAuth", service, True)
            + "\n      "
            + _method("POST", "postQueryAuth", service, False)
            + "\n    </resource>"
        )
        resources.append(
            '<resource path="auth">\n      <method name="POST" id="auth"><request>'
            '<representation mediaType="application/octet-stream"/></request>'
            '<response><representation mediaType="text/plain"/></response></method>\n'
            "    </resource>"
        )
    if service == "event":
        for path in ("catalogs", "contributors"):
            resources.append(
                f'<resource path="{path}"><method name="GET"><response>'
                '<representation mediaType="application/xml"/></response></method></resource>'
            )
    for path, media in (("version", "text/plain"), ("application.wadl", "application/xml")):
        resources.append(
            f'<resource path="{path}"><method name="GET"><response>'
            f'<representation mediaType="{media}"/></response></method></resource>'
        )
    body = "\n    ".join(resources)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<application xmlns="http://wadl.dev.java.net/2009/02" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema">\n'
        f'  <doc title="FDSN {service} web service {VERSIONS[service]} (seismoflow tests)"/>\n'
        f"  <resources base={quoteattr(f'{base_url}/fdsnws/{service}/1/')}>\n"
        f"    {body}\n  </resources>\n</application>\n"
    ).encode()


def simple_list(tag: str, items: list[str]) -> bytes:
    """``<Catalogs><Catalog>a</Catalog>...</Catalogs>`` as ObsPy's ``parse_simple_xml`` reads it."""
    inner = "".join(f"<{tag}>{escape(i)}</{tag}>" for i in items)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag}s><total>{len(items)}</total>'
        f"{inner}</{tag}s>\n"
    ).encode()
