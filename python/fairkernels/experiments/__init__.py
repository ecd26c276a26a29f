"""Experiments built on the public fairkernels API."""
