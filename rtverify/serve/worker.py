"""``python -m rtverify.serve.worker MODEL...``: one worker process of ``rtverify serve`` (started
by :class:`~rtverify.serve.engine.ProcessEngine`; not a command for people)."""

import sys

from .engine import worker_main

sys.exit(worker_main(sys.argv[1:]))
