"""JSON Schemas, one per message type (read by engine/schemas.py); a package so that installs ship them."""
