"""The mesh version; nodes with another version are refused at registration."""

__version__ = "0.2.0"
