"""``make soak``: the reliability suite. Real servers, real faults, figures in a table.

``python -m soak`` serves :mod:`soak.project` with ``python -m channels.serving`` on
asyncio and on trio, in turn, with a private ``redis-server`` behind each, and runs the
probes of :mod:`soak.probes` against it: connection churn, abrupt disconnects, bad frames,
Redis restarts and a stop with a stuck client. What a probe judges comes from the server
process itself (its ``/soak/stats`` endpoint, its exit) and from real sockets; nothing is
mocked. See :mod:`soak.run` for the command line.
"""
