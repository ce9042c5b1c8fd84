import sys

from .cli import convert_main

if __name__ == "__main__":
    sys.exit(convert_main())
