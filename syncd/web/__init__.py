"""The daemon's HTTP service: one port, served by uvicorn on the daemon's own event loop.

``server`` runs it; ``app`` builds the Starlette application (health checks, JSON errors, the
body-size limit) and holds the registry through which feature modules add their routes.
"""
