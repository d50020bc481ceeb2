"""tools/mutation.py keeps each run's result and writes the report from the results (the tool's
own mutation runs are not part of the tests: they take hours). A synthetic run of a small module
goes through `record_result` and `write_report` in a temporary tree."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mutation  # noqa: E402


def summary(**changes) -> dict:
    """What `mutation.run` returns for a run of the barred module `voice` (here a file of a
    temporary tree)."""
    s = {"module": "voice", "file": "pkg/voice.py", "tests": ["tests/test_voice_file.py"], "mutants": 40,
         "counts": {"killed": 30, "timeout": 2, "survived": 6, "no tests": 2}, "score": 0.8421,
         "wall_seconds": 150, "jobs": 2, "exit_code": 0, "survivors": ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"],
         "judged_equivalent_or_harmless": 2, "non_equivalent_killed": [32, 36],
         "survivors_not_judged": ["m3", "m4", "m5", "m6"]}
    s.update(changes)
    return s


def tree(tmp_path: Path) -> dict:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "voice.py").write_text("def f():\n    return 1\n")
    (tmp_path / "eq").mkdir()
    (tmp_path / "eq" / "voice.txt").write_text("# Survivors of voice.py judged equivalent.\nm1  # same\nm2  # same\n")
    return dict(results=tmp_path / "results", root=tmp_path)


def report(tmp_path: Path) -> list[str]:
    text = mutation.write_report(results=tmp_path / "results", out=tmp_path / "MUTATION.md", root=tmp_path,
                                 equivalent=tmp_path / "eq")
    assert (tmp_path / "MUTATION.md").read_text() == text
    return text.splitlines()


def row(lines: list[str], module: str) -> list[str]:
    (line,) = [line for line in lines if line.startswith(f"| `{module}` |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_run_is_kept_and_reported_with_its_bar(tmp_path):
    record = mutation.record_result(summary(), recheck=False, today="2027-01-02", **tree(tmp_path))
    kept = json.loads((tmp_path / "results" / "voice.json").read_text())
    assert kept == record and kept["file_sha1"] == mutation.file_sha1(tmp_path / "pkg" / "voice.py")
    assert kept["non_equivalent_killed"] == [32, 36] and kept["survivors_not_judged"] == ["m3", "m4", "m5", "m6"]
    lines = report(tmp_path)
    assert row(lines, "voice") == ["`voice`", "2027-01-02", "40", "30", "2", "6", "2", "2", "32/36 (88.9%)",
                                   "met", "no"]
    assert "Run 2027-01-02, 2.5 min, 2 mutants at a time." in lines
    assert "- Survivors not judged yet: `m3`, `m4`, `m5`, `m6`" in lines
    assert "> Survivors of voice.py judged equivalent." in lines       # the judged file's notes


def test_a_module_under_the_bar_or_changed_since_its_run_says_so(tmp_path):
    mutation.record_result(summary(non_equivalent_killed=[30, 36]), recheck=False, today="2027-01-02", **tree(tmp_path))
    (tmp_path / "pkg" / "voice.py").write_text("def f():\n    return 2\n")
    assert row(report(tmp_path), "voice")[-3:] == ["30/36 (83.3%)", "NOT met", "yes: run it again"]


def test_a_recheck_updates_the_counts_and_is_listed(tmp_path):
    mutation.record_result(summary(), recheck=False, today="2027-01-02", **tree(tmp_path))
    after = summary(counts={"killed": 33, "timeout": 2, "survived": 3, "no tests": 2}, wall_seconds=30,
                    non_equivalent_killed=[35, 36], survivors_not_judged=["m6"],
                    rechecked={"survivors_before": 4, "killed_now": 3})
    record = mutation.record_result(after, recheck=True, today="2027-01-03", results=tmp_path / "results",
                                    root=tmp_path)
    assert record["finished"] == "2027-01-02" and record["wall_seconds"] == 150      # the run's
    assert record["rechecks"] == [{"survivors_before": 4, "killed_now": 3, "finished": "2027-01-03", "wall_seconds": 30}]
    cells = row(report(tmp_path), "voice")
    assert cells[1] == "2027-01-02; recheck 2027-01-03: 3 of 4 killed"
    assert cells[3] == "33" and cells[8] == "35/36 (97.2%)"


def test_the_committed_report_is_the_one_the_results_give(tmp_path):
    """tests/MUTATION.md is what `--report` writes from tests/mutation/ (no hand edits), but for
    the last column, which says whether a module changed since its run as of the writing (a
    change to a module does not have to rewrite the report)."""
    import re

    def without_last_column(text):
        return re.sub(r"\| (no|yes: run it again|unknown) \|$", "| |", text, flags=re.M)

    text = mutation.write_report(out=tmp_path / "MUTATION.md")
    assert without_last_column((mutation.ROOT / "tests" / "MUTATION.md").read_text()) == without_last_column(text)
