"""The daemon's HTTP service: one port, served by uvicorn on the daemon's own event loop.

``server`` runs it; ``app`` builds the Starlette application (health checks, JSON errors, the
body-size limit) and lists every feature module's routes; ``host`` is what routes may ask of the
daemon that serves them.
"""
