"""Sources and sinks at runtime: the readers and writers behind ``mesh.sources`` and
``mesh.sinks``.

``readers`` (with ``splits``) read sources; ``writers`` holds the sink contract
(``SinkOperator``) and the at-least-once sinks; ``txn_sinks`` and ``sqlite_sink`` are
the exactly-once, checkpoint-committed sinks; ``factory`` picks one for a description.
"""
