"""Fakes that let tests exercise real client code without a cluster (see apiserver.py)."""
