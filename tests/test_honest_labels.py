"""Labels that say no more than the code does (issue 26.3): the status vocabulary tells the
paper's full description from an approximation from its abstract, SSAH's modified default has
its paper-form loss as a row of its own, and the table notes say what the rows are, what they
trained on and what "default" means."""

from __future__ import annotations

from pathlib import Path

from cmr_bench.plugin import STATUS_MEANING
from cmr_bench.registry import all_methods, get_method
from cmr_bench.report.tables import hash_table, paper_table


def test_statuses_say_how_much_of_the_paper_is_implemented():
    status = {n: c.info.status for n, c in all_methods().items()}
    assert set(status.values()) <= set(STATUS_MEANING)
    assert status["lgcfl"] == status["caal"] == "from abstract"
    assert status["mcsm"] == status["cm-gan"] == status["tanss"] == "partial"
    assert status["ssah"] == "modified"
    assert status["dscmr"] == status["acmr"] == status["djsrh"] == "faithful"


def test_ssah_paper_loss_is_a_variant_and_a_hash_table_row(tmp_path: Path):
    cls = get_method("ssah")
    paper = cls.variants["paper loss"]
    assert paper == {"pair_norm": "sum", "hash_theta_bits": 0}
    assert (cls.defaults["pair_norm"], cls.defaults["hash_theta_bits"]) != (paper["pair_norm"], paper["hash_theta_bits"])
    assert cls.row_variants == ("paper loss",)
    table = hash_table("wiki", tmp_path)
    rows = list(table.frame["plugin"])
    assert "ssah[paper loss]" in rows
    assert not any("[" in m and not m.startswith("ssah[") for m in rows)  # ablations stay out
    assert any("modified" in n and "SSAH" in n for n in table.notes)


def test_table2_notes_say_status_refit_and_what_default_means(tmp_path: Path):
    notes = paper_table("2", "wiki", tmp_path).notes
    status = next(n for n in notes if n.startswith("Implementation status"))
    assert "from abstract" in status and "LGCFL" in status and "CAAL" in status
    assert "partial" in status and "TANSS" in status
    refit = next(n for n in notes if n.startswith("Every row trains on the whole training split"))
    assert all(m in refit for m in ("DSCMR", "Deep-SM", "MCSM", "CM-GAN", "TANSS", "CAAL"))
    default = next(n for n in notes if n.startswith("Each method's default configuration:"))
    assert "validation" in default and "CAAL's 60 epochs" in default and "z-scoring" in default


def test_the_report_says_what_default_means(tmp_path: Path):
    from report_store import make_store, odd_method

    from cmr_bench.report.page import CONFIG_MEANING, write_report

    with odd_method():
        store = make_store(tmp_path / "runs")
        _, md_path = write_report(store, "synthetic", tmp_path / "out")
    assert "chosen once on a validation split" in CONFIG_MEANING and "retrained on the whole training split" in CONFIG_MEANING
    assert CONFIG_MEANING[:200] in md_path.read_text(encoding="utf-8")
    assert "the papers' defaults" not in md_path.read_text(encoding="utf-8")
