"""Real backend servers (Django, Flask, FastAPI/uvicorn) for the integration tests.

Each framework serves the same :class:`~backends.scenario.Scenario` through
the SDK's adapter, on a loopback port chosen at runtime, in a thread of the
test process (so the tests can read what the backend saw).
"""
