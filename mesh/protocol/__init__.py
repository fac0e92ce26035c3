"""The control-plane vocabulary shared by coordinator, nodes and clients (no I/O)."""
