import sys

from changedet.cli import main

sys.exit(main())
