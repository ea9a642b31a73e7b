"""`python -m sc_imagenet.evaluate`: see `sc_imagenet.evaluate.run`."""

import sys

from sc_imagenet.evaluate.run import main

if __name__ == "__main__":
    sys.exit(main())
