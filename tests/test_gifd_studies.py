"""The GIFD studies' tables: the breaching comparison's paired interval."""

from __future__ import annotations

import pandas as pd


def test_breaching_report_paired_interval_and_identical_rows():
    from studies.compare_breaching import report

    frame = pd.DataFrame({"attack": ["dlg"] * 3 + ["ig"] * 2, "budget": [50] * 5,
                          "ours-psnr": [10.0, 12.0, 14.0, 9.0, 9.5], "breaching-psnr": [10.0, 11.0, 12.0, 9.0, 9.5]})
    lines = report(frame).splitlines()
    # differences 0, 1, 2: mean 1, sd 1, t(0.975, 2) = 4.303 -> half-width 2.484
    assert lines[2] == "| dlg | 50 | 3 | 12.00 | 11.00 | +1.00 [-1.48, +3.48] | 2.00 |"
    assert lines[3] == "| ig | 50 | 2 | 9.25 | 9.25 | +0.00 [+0.00, +0.00] | 0.00 |"
