"""The soak's parts (see ../soak): one module per process or pure concern.

Processes: `checker` (well-behaved clients that verify every answer),
`hostile` (misbehaving clients), `faulty_backend` (a backend that hangs,
stalls, truncates and answers garbage). In the orchestrator: `faults`
(kill -9 / SIGSTOP of the echo backend, connection floods past the cap),
`sampler` (fds, RSS, /metrics once a second), `loadgen` (pcl-load segments).
Pure: `expect` (what each answer may be), `flat` (the flatness criterion),
`svg` (the plot), `wire` (HTTP/1.1 framing), `report` (JSON and markdown).
Standard library only.
"""
