"""`python -m kerasvit.evaluate`: see kerasvit.cli.evaluate."""

from kerasvit.cli.evaluate import main

if __name__ == "__main__":
    main()
