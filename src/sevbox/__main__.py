import sys

from sevbox.cli import main

sys.exit(main())
