"""Search journals: their names, and which old ones a finished job deletes."""

from __future__ import annotations

import pytest

from tunebench.pipeline import journals

CODE, OTHER_CODE = "0123456789ab", "ba9876543210"


def test_the_name_carries_settings_and_code_apart(tmp_path):
    a = journals.journal_path(tmp_path, "tpe", '{"trials": 16}', CODE)
    assert a.parent == tmp_path and a.name.startswith("tpe-") and a.name.endswith(f"-{CODE}.journal")
    assert journals.journal_path(tmp_path, "tpe", '{"trials": 16}', CODE) == a            # stable
    assert journals.journal_path(tmp_path, "tpe", '{"trials": 64}', CODE) != a            # settings
    assert journals.journal_path(tmp_path, "tpe", '{"trials": 16}', OTHER_CODE) != a      # code
    with pytest.raises(ValueError, match="not 12 hex"):
        journals.journal_path(tmp_path, "tpe", "{}", "v1")


def test_stale_is_the_same_strategys_journals_of_other_code(tmp_path):
    own = journals.journal_path(tmp_path, "random", "quick", CODE)
    keep = [
        own,
        journals.journal_path(tmp_path, "random", "full", CODE),            # another profile: resumable
        journals.journal_path(tmp_path, "coarse_to_fine", "quick", OTHER_CODE),  # another strategy
        journals.journal_path(tmp_path, "random_2", "quick", OTHER_CODE),    # a name it is a prefix of
        tmp_path / "random-by-hand.journal",                                 # not named by journal_path
        tmp_path / "random.parquet",
    ]
    gone = [
        journals.journal_path(tmp_path, "random", "quick", OTHER_CODE),
        journals.journal_path(tmp_path, "random", "full", OTHER_CODE),
        tmp_path / "random-d39085d7ef.journal",                              # the older naming (CHANGELOG.md)
    ]
    for path in keep + gone:
        path.write_text("x")
    assert journals.stale(own) == sorted(gone)
    assert journals.stale(tmp_path / "random-by-hand.journal") == []        # a hand-named journal prunes nothing
