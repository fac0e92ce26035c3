"""Keyed and operator state: backends, snapshot files, checkpoint metadata.

Knows keys, key groups, tables and files — nothing of jobs, nodes or the coordinator.
"""
