"""``python -m rtverify.serve.worker MODEL...``: one worker process of ``rtverify serve`` (started
by :class:`~rtverify.serve.engine.ProcessEngine`; not a command for people). Importing it does
nothing."""

import sys

from .engine import worker_main

if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
