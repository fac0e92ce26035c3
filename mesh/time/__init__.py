"""Time: clocks (``mesh.time.clock``) and durations (``mesh.time.durations``).

Knows nothing of the network or of jobs. Import the submodules directly; this package
module stays empty so that importing durations does not load the clock's dependencies.
"""
