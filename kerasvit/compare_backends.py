"""`python -m kerasvit.compare_backends`: see kerasvit.cli.compare_backends."""

from kerasvit.cli.compare_backends import main

if __name__ == "__main__":
    main()
