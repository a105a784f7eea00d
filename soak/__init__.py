"""The soak runner (`expressgateway-soak`): hours of real traffic and chaos against the real
gateway, verdicts per series (BOUNDED/DRIFT), a JSON and a self-contained HTML report.

Owns load scenarios (`soak.scenarios`, one module each), backends, the chaos schedule, the
sampler, the verdict rules and the report. It drives the gateway only from outside (its
command, `gatewayctl`, signals, `/metrics`), the way an operator does; it must never import
the gateway's workers or supervisor internals.
"""
