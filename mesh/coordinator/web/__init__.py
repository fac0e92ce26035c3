"""The coordinator's HTTP face: a REST API under ``/api/v1/`` and the dashboard page."""
