"""``pixelwise serve``: a trained run behind a REST API and a web page, in one process.

:mod:`.app` (the FastAPI app: endpoints, limits, access log, page), :mod:`.batcher` (one inference thread
batching waiting images), :mod:`.settings` (the options), :mod:`.server` (binds the socket, runs uvicorn),
``static/`` (the page: HTML, JS and CSS, no build step, nothing from other sites).
"""
