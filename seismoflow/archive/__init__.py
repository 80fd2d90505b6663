"""Reading local archives: SDS/miniSEED/SAC sources, StationXML, QuakeML, event windows."""
