"""env.json's record of the code: the commit, and whether the checkout had changes."""

import subprocess

from kerasvit.runs import environment


def git(checkout, *args):
    subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True)


def test_tree_dirty_tells_uncommitted_changes_to_tracked_files(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "model.py").write_text("x = 1\n")
    git(tmp_path, "add", "model.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert environment.git_tree_dirty(tmp_path) is False
    (tmp_path / "notes.txt").write_text("untracked files do not change the code that ran")
    assert environment.git_tree_dirty(tmp_path) is False
    (tmp_path / "model.py").write_text("x = 2\n")
    assert environment.git_tree_dirty(tmp_path) is True


def test_tree_dirty_is_unknown_outside_a_checkout(tmp_path):
    assert environment.git_tree_dirty(tmp_path) is None
