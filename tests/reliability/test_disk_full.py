"""A save that hits a full disk raises InsufficientSpaceError and leaves the repository as it was."""

from __future__ import annotations

import relh_diskfull as D


def test_a_full_disk_fails_the_save_cleanly(tmp_path):
    pages = [0, 2, 5, 8]  # free 4 KiB pages left before the save: every write stage runs out somewhere
    res = D.run_disk_full(tmp_path, [p * D.PAGE for p in pages])
    problems = [f"{c['variant']} slack={c['slack']}: {p}" for c in res["cases"] for p in c["problems"]]
    assert problems == [], f"mechanism={res['mechanism']}: {problems[:10]}"
    for variant in D.VARIANTS:
        outcomes = {c["outcome"] for c in res["cases"] if c["variant"] == variant}
        assert "raised-unchanged" in outcomes, (variant, outcomes)
        assert outcomes <= {"raised-unchanged", "saved"}, (variant, outcomes)
