"""The node's data plane: moving frames between subtasks, with credit-based flow control.

``channels`` holds the channel endpoints (``OutputChannel`` with its credit and backlog,
``InputChannel``/``InputGate`` merging a consumer's inputs) and the same-node links;
``network`` carries frames between nodes (``NodeNetwork``, remote links and credit
returns). Nothing here knows about records, operators or checkpoints: payloads are bytes.
"""
