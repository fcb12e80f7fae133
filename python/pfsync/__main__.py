"""`python -m pfsync ARGS`: the same as the `pfsync` binary, with the secret settings of `pfsync.main`."""

from pfsync import main

if __name__ == "__main__":
    main()
