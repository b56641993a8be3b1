"""The control-room dashboard (客流监控, 数据大屏, 一键管控): a small aiohttp web app,
served by `turnstile dashboard`, that talks gRPC to a Turnstile node like any client.

An operator or a viewer logs in with an API key; the app keeps it server-side in a
session (the page never sees it again), streams `ReportService.WatchLive` to the page as
server-sent events and turns the page's clicks into `AdminService` controls
(SetSalesPaused, SetEntryClosed, SetLiveCapacity, SetFlowAlerts). The page in
``static/`` is plain HTML, CSS and JavaScript with no build step, served by the app
itself (no CDN, no external fonts). Needs ``pip install turnstile[dashboard]``
(aiohttp); like every client it never imports the engine or the server.
"""
