"""`gatekeeper serve`: the HTTP API, the Alertmanager webhook and the control loop.

The aiohttp application is built by `app.build_app` from injected dependencies (tests build
it against the emulated cluster); `controller` runs the lifecycle for every pair.
"""
