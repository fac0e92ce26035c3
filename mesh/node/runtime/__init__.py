"""Running a job's subtasks on a node.

``job`` turns a deploy message into running subtasks (``wiring`` builds them);
``task`` is one subtask's loop, with its ``chain`` of operators, its ``eventtime``
collaborator and its barrier ``alignment``; ``output`` partitions the chain's output
into the edges' channels; ``restore`` reads what a restored job gets back; ``bundle``
unpacks a job's code.
"""
