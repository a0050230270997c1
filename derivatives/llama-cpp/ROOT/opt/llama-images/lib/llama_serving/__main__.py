"""`python3 -m llama_serving boot|serve|plan` (see service.py)."""

import sys

from .service import main

sys.exit(main())
