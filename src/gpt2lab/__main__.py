import logging
import os
import sys

from .cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # One of several torchrun processes, its work written, flushed and its process group left. The
    # interpreter's teardown is skipped: there gloo's threads can abort the process ("terminate called
    # without an active exception", SIGABRT; about 1 in 20 two-process runs here, after the run had
    # finished and saved everything), and torchrun would then report a finished run as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
sys.exit(code)
