"""`python -m eclipse_seg ...` (what torchrun launches) is the `eclipse-seg` command."""

import sys

from eclipse_seg.cli import main

sys.exit(main())
