import faulthandler
import sys

# Before any other import: a native crash while importing (gRPC, uvloop) must
# still leave the Python stacks on stderr, which is the process's log.
faulthandler.enable()

from syncmesh_app.cli import main  # noqa: E402

sys.exit(main())
