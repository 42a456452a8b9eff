"""``python -m dantaro_replay``: the offline Upbit replay server."""

import sys

from dantaro_replay.server import main

sys.exit(main())
