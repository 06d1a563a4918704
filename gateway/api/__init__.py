"""The gateway's local HTTP face for technicians: status page, JSON API, live events, metrics.

``serve_api(status=..., events=..., host=..., port=..., token=...)`` is an async context manager
that owns an aiohttp server and its background tasks::

    async with serve_api(status=app.status, events=app.events, port=0) as server:
        print(server.url)

Routes: ``/`` (the status page, served from package files: works offline), ``/api/status``
(snapshot), ``/api/events`` (Server-Sent Events), ``/api/history`` (recent values for the
sparklines), ``/metrics`` (Prometheus text exposition) and ``/healthz``. The server listens on
loopback unless told otherwise; any other address requires a token, given by clients as
``Authorization: Bearer <token>`` or ``?token=<token>``.
"""

from gateway.api.server import ApiServer, EventsFactory, StatusFn, serve_api

__all__ = ["ApiServer", "EventsFactory", "StatusFn", "serve_api"]
