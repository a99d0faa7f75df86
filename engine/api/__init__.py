"""The HTTP API served by every worker (Faust's web server): segments, membership queries, auth."""
