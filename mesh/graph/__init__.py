"""Job graphs as pure data: logical graph → chained job graph → execution graph; key groups."""
