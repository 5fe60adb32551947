import sys

from syncmesh_app.cli import main

sys.exit(main())
