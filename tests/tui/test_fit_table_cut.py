"""A model name that does not fit loses part of its name, never its tag: "qwen2.5:7b-instruct" and
"qwen2.5:7b-instruct-q8_0" are told apart at 80 columns (issue 24 item 15)."""

from __future__ import annotations

from app.tui.widgets.fit_table import FitTable


def test_a_cut_model_name_keeps_its_tag():
    cut = FitTable._cut
    assert cut("qwen2.5:7b-instruct", 16, False, keep_tag=True).plain == "qwe…:7b-instruct"
    assert cut("llama3.1:70b", 12, False, keep_tag=True).plain == "llama3.1:70b"  # fits: as it is
    assert cut("llama3.1:70b-instruct-q4_K_M", 12, False, keep_tag=True).plain == "llama3.1:70…"  # tag too long: end
    assert cut("no-tag-here-at-all", 10, False, keep_tag=True).plain == "no-tag-he…"
    assert cut("qwen2.5:7b-instruct", 16, False).plain == "qwen2.5:7b-inst…"  # other columns as before
