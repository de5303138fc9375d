"""`python -m redis_cache_middleware`: the operator CLI (see `cli.py`)."""

import sys

from .cli import main

sys.exit(main())
