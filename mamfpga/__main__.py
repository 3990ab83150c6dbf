import sys

from mamfpga.cli import main

sys.exit(main())
