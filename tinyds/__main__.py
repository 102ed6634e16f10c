"""`python -m tinyds` is the `tinyds` command."""
import sys

from .cli import main

sys.exit(main())
