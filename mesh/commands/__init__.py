"""The ``mesh`` subcommands, one module per group; ``mesh.cli`` assembles them."""
