"""`python -m kerasvit.compare_models`: see kerasvit.cli.compare_models."""

from kerasvit.cli.compare_models import main

if __name__ == "__main__":
    main()
