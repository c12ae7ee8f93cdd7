"""`python -m kerasvit.compare_backends`: see kerasvit.compare.backends."""

from kerasvit.compare.backends import main

if __name__ == "__main__":
    main()
