"""`python -m kerasvit.export`: see kerasvit.cli.export."""

from kerasvit.cli.export import main

if __name__ == "__main__":
    main()
