"""`python -m kerasvit.train`: see kerasvit.cli.train."""

from kerasvit.cli.train import main

if __name__ == "__main__":
    main()
