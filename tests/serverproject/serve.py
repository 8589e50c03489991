"""``python -m tests.serverproject.serve BACKEND``: serve the project with
``channels.serving.serve`` on a free port, printing ``READY <url>`` once listening."""

from __future__ import annotations

import sys

from channels.serving import serve

from .asgi import application


def main() -> None:
    serve(
        application,
        bind=["127.0.0.1:0"],
        backend=sys.argv[1],  # type: ignore[arg-type]
        graceful_timeout=10,
        on_ready=lambda addresses: print("READY", addresses[0], flush=True),
    )
    print("serve returned", flush=True)


if __name__ == "__main__":
    main()
