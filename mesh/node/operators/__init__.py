"""What runs inside a chain, one batch at a time.

``base`` is the contract (``RuntimeOperator``, ``KeyedOperator``, ``RestoredState``);
``records`` names failing records and encodes batches; ``stateless``, ``keyed``,
``process`` and ``windowing`` are the built-in operator families, on ``timers``;
``factory.build_operator`` picks one for an operator definition. ``context`` is what a
connector knows about the subtask it runs in.
"""
