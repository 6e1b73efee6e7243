"""``python -m diamond_env`` runs the ``diamond-env`` command line."""

import sys

from diamond_env.cli.main import main

sys.exit(main())
