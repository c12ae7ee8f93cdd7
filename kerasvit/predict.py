"""`python -m kerasvit.predict`: see kerasvit.cli.predict."""

from kerasvit.cli.predict import main

if __name__ == "__main__":
    main()
