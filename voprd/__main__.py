import sys

from voprd.cli import main

sys.exit(main())
