import sys

from imageflow_client.cli import main

sys.exit(main())
