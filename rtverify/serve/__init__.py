"""Network services in front of the verifier.

``rtverify serve``: one process, the models loaded once, many streams over WebSocket and HTTP.

- :mod:`rtverify.serve.settings` - the limits, each a named setting with its unit.
- :mod:`rtverify.serve.pcm` - raw PCM messages -> 16 kHz chunks (the stdin source, pushed).
- :mod:`rtverify.serve.engine` - where the streams' CPU work runs (worker processes).
- :mod:`rtverify.serve.server` - the Starlette app (``/v1/listen`` and the HTTP routes) and
  :func:`~rtverify.serve.server.run_server`.

Needs the ``serve`` extra (Starlette, uvicorn, websockets, python-multipart); nothing outside this
package imports it, so the plain CLI keeps its start-up time and dependencies. The Wyoming gate
(:mod:`rtverify.serve.wyoming`) is ``rtverify wyoming``'s.
"""
