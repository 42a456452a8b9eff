"""``python -m dantaro_assets.replay``: the offline Upbit replay server."""

import sys

from dantaro_assets.replay.server import main

sys.exit(main())
