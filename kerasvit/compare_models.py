"""`python -m kerasvit.compare_models`: see kerasvit.compare.leaderboard."""

from kerasvit.compare.leaderboard import main

if __name__ == "__main__":
    main()
