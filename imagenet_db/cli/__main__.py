"""``python3 -m imagenet_db.cli SUBCOMMAND ...``: the same as the imagenet-db command."""
import sys

from imagenet_db.cli import main

sys.exit(main())
