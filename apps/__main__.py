import sys

from geo3d_apps.cli import main

sys.exit(main())
