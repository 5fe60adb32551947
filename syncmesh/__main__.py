import sys

from syncmesh.cli import main

sys.exit(main())
