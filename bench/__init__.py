"""`make bench`: throughput of the segment engine against an empty Faust agent baseline."""
