"""common/markdown.py: the published pages' table format (unpadded cells, one ``---`` per column)."""

import numpy as np

from common import markdown as md


def test_table_has_header_rule_and_rows_with_formatted_cells():
    lines = md.table(["method", "lr", "trials"], [["fedavg", md.cell(0.017798814254422757, ".4g"), 3],
                                                  ["ditto", md.cell(np.float64("nan"), ".4g", "–"), 12]])
    assert lines == ["| method | lr | trials |", "|---|---|---|", "| fedavg | 0.0178 | 3 |", "| ditto | – | 12 |"]
    assert {line.count("|") for line in lines} == {4}


def test_cell_formats_only_floats_and_shows_missing_only_when_asked():
    assert md.cell(2.50) == "2.5" and md.cell(np.int64(7), ".2f") == "7" and md.cell("0.1234", ".2f") == "0.1234"
    assert md.cell(float("nan")) == "nan" and md.cell(None, missing="") == "" and md.cell(0.0, missing="–") == "0"
