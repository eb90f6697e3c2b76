"""Shared test support: one of each helper the test modules need.

* :mod:`.net`: loopback sockets and ports (no port races, nothing beyond 127.0.0.1).
* :mod:`.server`: an ASGI app under real uvicorn in a background thread.
* :mod:`.capture`: a Segment-compatible ``/v1/batch`` endpoint that records what it
  receives and can be scripted to misbehave; :mod:`.closing_server`, a peer that
  hangs up without answering.
* :mod:`.polling`: waiting, boundedly, for something to become true.
* :mod:`.events`: ``Identify``, ``ExperimentViewed`` and ``ConversionTriggered`` records.
* :mod:`.stores`: a dedupe store exercised the way delivery uses it.
* :mod:`.redis_server` and :mod:`.browser`: the ``redis_url``, ``redis_server`` (one to kill
  and restart) and ``browser``/``page`` fixtures, registered for every module by
  ``tests/conftest.py``.
* :mod:`.ci`: skip for a missing service, except under CI, where that fails.
* :mod:`.outage_site`: the site ``tests/test_redis_outage.py`` runs under four uvicorn workers.
* :mod:`.dashboard`: the sink dashboard's results read off its HTML or a live page, and checked
  against ``experiment_results()``; :mod:`.artefacts`: where screenshots go.
"""
