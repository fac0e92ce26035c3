"""The coordinator: node registry, job registry, scheduler, and job lifecycle."""
