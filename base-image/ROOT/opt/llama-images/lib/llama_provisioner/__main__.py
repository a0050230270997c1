"""`python -m llama_provisioner`: what /opt/instance-tools/bin/provisioner runs."""

import sys

from .cli import main

sys.exit(main())
