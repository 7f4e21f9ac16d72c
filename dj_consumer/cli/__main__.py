"""`python -m dj_consumer.cli …` is `dj-consumer …`."""

from __future__ import annotations

import sys

from dj_consumer.cli._run import main

sys.exit(main())
