"""`python -m kerasvit.demo`: see kerasvit.cli.demo."""

from kerasvit.cli.demo import main

if __name__ == "__main__":
    main()
