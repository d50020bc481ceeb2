"""Mutation testing of the modules that carry behaviour, with mutmut 3, one module at a time
(run it through tools/mutation.sh, which installs mutmut). Not part of CI: it takes long.

For each module: a fresh copy of the working tree in out/mutation/<name>/, a mutmut config that
mutates that one file and selects the tests below (fast and relevant ones; mutmut then runs, per
mutant, only those of them that call the mutated function, stopping at the first failure), a
per-mutant CPU-time limit, and a summary: counts, score, wall time, and the diff of every
surviving mutant (out/mutation/<name>/survivors.txt). Each run's result is also kept in the tree,
tests/mutation/<name>.json, and the report tests/MUTATION.md is written from those (never by hand).

    bash tools/mutation.sh sampling speech_codes voice
    bash tools/mutation.sh --list
    bash tools/mutation.sh --resume generate     # continue a stopped run
    bash tools/mutation.sh --recheck generate    # its survivors again, with the tests added since
    python tools/mutation.py --report            # tests/MUTATION.md again from tests/mutation/
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "mutation"
RESULTS = ROOT / "tests" / "mutation"          # <name>.json: the last run of each module (kept in the tree)
REPORT = ROOT / "tests" / "MUTATION.md"        # written from RESULTS
EQUIVALENT = ROOT / "tools" / "mutation_equivalent"
BAR = 0.85                                     # of the non-equivalent mutants killed, for the modules below
BARRED = ("generate", "nodes/generate", "prompt", "voice")
PACK = "qwen_tts_pack"          # the name tests/comfy_env.py imports the pack under

# name -> (file to mutate, the tests that cover it: pytest node ids or files)
NODE_INPUTS = "tests/test_node_inputs.py"
MODULES = {
    "sampling": ("qwen_tts_core/sampling.py", [
        "tests/test_core_sampling.py", "tests/test_core_generate.py",
        "tests/test_parity.py::test_greedy_codes_identical[cv_batch]",
        "tests/test_parity.py::test_greedy_codes_identical[base_icl]"]),
    "speech_codes": ("qwen_tts_core/speech_codes.py", [
        "tests/test_speech_codes.py", "tests/test_parity.py::test_decoded_audio_matches_official",
        "tests/test_nodes.py::test_tokenizer_loader_encode_decode",
        "tests/test_nodes.py::test_clone_in_context_and_decode_matches",
        "tests/test_nodes.py::test_offload_and_reload"]),
    "voice": ("qwen_tts_core/voice.py", [
        "tests/test_voice_file.py", "tests/test_nodes.py::test_save_and_load_voice",
        "tests/test_nodes.py::test_load_voice_errors",
        "tests/test_nodes.py::test_save_voice_name_fails_validation_before_anything_runs",
        "tests/test_nodes.py::test_load_voice_lists_only_what_it_loads"]),
    "generate": ("qwen_tts_core/generate.py", [
        "tests/test_core_generate.py", "tests/test_parity.py::test_greedy_codes_identical",
        "tests/test_core_static.py", "tests/test_core_stream.py", "tests/test_core_sampling.py",
        "tests/test_core_devices.py", "tests/test_core_memory.py::test_step_estimate_is_the_size_of_the_step_it_sizes"]),
    "prompt": ("qwen_tts_core/prompt.py", [
        "tests/test_parity.py::test_prompt_ids_and_embeddings", "tests/test_parity.py::test_greedy_codes_identical",
        "tests/test_core_inputs.py", "tests/test_longform_synthesis.py", "tests/test_prompt_safety.py",
        "tests/test_core_devices.py::test_half_precision_first_step_logits_and_no_overflow"]),
    "paths": ("qwen_tts_core/paths.py", ["tests/test_paths.py"]),
    "longform/track": ("qwen_tts_core/longform/track.py", [
        "tests/test_longform_tracks.py", "tests/test_longform_codec.py"]),
    "longform/synthesis": ("qwen_tts_core/longform/synthesis.py", [
        "tests/test_longform_synthesis.py", "tests/test_longform_runaway.py"]),
    "longform/runaway": ("qwen_tts_core/longform/runaway.py", ["tests/test_longform_runaway.py"]),
    "longform/text": ("qwen_tts_core/longform/text.py", ["tests/test_longform_text.py"]),
    "longform/normalize": ("qwen_tts_core/longform/normalize.py", ["tests/test_longform_text.py"]),
    "longform/languages": ("qwen_tts_core/longform/languages.py", ["tests/test_longform_text.py"]),
    "longform/subtitles": ("qwen_tts_core/longform/subtitles.py", ["tests/test_longform_tracks.py"]),
    "longform/script": ("qwen_tts_core/longform/script.py", ["tests/test_longform_tracks.py"]),
    "longform/edit": ("qwen_tts_core/longform/edit.py", ["tests/test_longform_tracks.py"]),
    "nodes/generate": ("nodes/generate.py", [NODE_INPUTS, "tests/test_nodes.py", "tests/test_nodes_devices.py"]),
    "nodes/types": ("nodes/types.py", [NODE_INPUTS, "tests/test_nodes.py"]),
    "nodes/voices": ("nodes/voices.py", [NODE_INPUTS, "tests/test_nodes.py"]),
    "nodes/longform": ("nodes/longform.py", [NODE_INPUTS, "tests/test_longform_nodes.py"]),
    "nodes/codec": ("nodes/codec.py", ["tests/test_nodes.py"]),
    "nodes/loader": ("nodes/loader.py", ["tests/test_nodes.py"]),
    "nodes/models": ("nodes/models.py", ["tests/test_nodes.py", "tests/test_nodes_devices.py",
                                         "tests/test_longform_nodes.py"]),
    "nodes/folders": ("nodes/folders.py", ["tests/test_nodes.py", "tests/test_nodes_download.py"]),
    "nodes/progress": ("nodes/progress.py", ["tests/test_nodes.py", "tests/test_longform_nodes.py",
                                             "tests/test_finetune_nodes.py"]),
}
GROUPS = {"longform": [m for m in MODULES if m.startswith("longform/")],
          "nodes": [m for m in MODULES if m.startswith("nodes/")]}
STATUSES = ["killed", "timeout", "survived", "suspicious", "no tests", "skipped", "segfault",
            "check was interrupted by user", "caught by type check"]


def missing_tests(tests: list[str]) -> list[str]:
    """The test files or functions in `tests` that the tree does not have (a renamed test would
    otherwise fail mutmut's first, clean run with a long traceback)."""
    missing = []
    for test in tests:
        path, _, func = test.partition("::")
        name = func.split("[")[0]
        if not (ROOT / path).is_file() or (name and not re.search(rf"^def {re.escape(name)}\(",
                                                                  (ROOT / path).read_text(), re.M)):
            missing.append(test)
    return missing


def working_tree_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what the tests see in this checkout."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def prepare(name: str, source: str, tests: list[str]) -> Path:
    """out/mutation/<name>/ with a copy of the tree and a setup.cfg for mutmut. Core modules are
    imported as `qwen_tts_core.*` (the tree's root on sys.path); the nodes as `qwen_tts_pack.nodes.*`
    (tests/comfy_env.py loads the pack under that name), so for them the tree goes one level
    down, into qwen_tts_pack/, where mutmut's module names (from paths) match."""
    work = OUT / name.replace("/", "-")
    shutil.rmtree(work, ignore_errors=True)
    copy_tree(work, source)
    write_config(work, source, tests)
    return work


def nested(source: str) -> bool:
    """Whether `source` is a node module (tested as part of the pack, one folder down)."""
    return source.startswith("nodes/")


def tree_of(work: Path, source: str) -> Path:
    return work / PACK if nested(source) else work


def copy_tree(work: Path, source: str) -> None:
    for rel in working_tree_files():
        target = tree_of(work, source) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def write_config(work: Path, source: str, tests: list[str]) -> None:
    prefix = f"{PACK}/" if nested(source) else ""
    lines = ["[mutmut]",
             f"source_paths = {prefix}{source.split('/')[0]}",
             f"only_mutate = {prefix}{source}",
             "also_copy =", f"    {PACK}/" if nested(source) else "    __init__.py\n    nodes/",
             "pytest_add_cli_args_test_selection ="] + [f"    {prefix}{t}" for t in tests] + [
             "pytest_add_cli_args =\n    -p\n    no:cacheprovider",
             # mutmut stops a mutant's tests after (their usual time + 10 s) x 2 x this multiplier
             # seconds of CPU time (not wall time: a busy machine does not cause timeouts), so a
             # mutant that loops forever costs ~4x its tests' time, not an hour
             "timeout_multiplier = 2.0", "timeout_constant = 10.0",
             # with node tests: each mutant in a process forked from a server that only collected
             # the tests (the node tests cache base runs and models, and share comfy_env's
             # folders, which two mutants tested side by side must not); core tests alone: forked
             # from mutmut's own process after the clean run (faster: the fixture models stay
             # loaded; the mutated functions all run at test time, not at load)
             f"process_isolation = {'forkserver' if nested(source) or any('node' in t for t in tests) else 'fork'}",
             "use_git_change_detection = false", ""]
    (work / "setup.cfg").write_text("\n".join(lines))


def mutmut(work: Path, *args: str, env: dict, log=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from mutmut.__main__ import cli; "
                           "sys.argv[0] = 'mutmut'; cli()", *args], cwd=work, env=env, text=True,
                          stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT)


def statuses(work: Path, env: dict) -> dict[str, str]:
    """mutant name -> mutmut's status of it (killed, survived, ...) in the run in `work`."""
    return dict(re.findall(r"^\s+(\S+): (.+)$", mutmut(work, "results", "--all", "true", env=env).stdout, re.M))


def judged_equivalent(name: str) -> dict[str, str]:
    """Survivors of `name`'s run judged equivalent (no behaviour differs) or harmless (display
    text), from tools/mutation_equivalent/<name>.txt: one `mutant name  # why` a line. Names are
    mutmut's, valid for the module as it was mutated; a changed module needs a new list."""
    path = EQUIVALENT / (name.replace("/", "-") + ".txt")
    if not path.is_file():
        return {}
    lines = (line.split("#", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {parts[0].strip(): parts[1].strip() if len(parts) > 1 else "" for parts in lines}


def run(name: str, jobs: int, env: dict, resume: bool = False, recheck: bool = False) -> dict:
    source, tests = MODULES[name]
    work = OUT / name.replace("/", "-")
    rechecked = []
    equivalent = judged_equivalent(name)
    if recheck:
        # the survivors of a finished or stopped run, tested again with the current tests: the
        # module itself must be the one the run mutated, the rest of the tree (tests included) is
        # brought up to date, and mutmut's map of which test calls which function is rebuilt
        if not (work / "setup.cfg").is_file():
            raise SystemExit(f"{name}: no run in {work} to recheck")
        if (tree_of(work, source) / source).read_bytes() != (ROOT / source).read_bytes():
            raise SystemExit(f"{name}: {source} changed since the run in {work}; run it afresh")
        rechecked = sorted(k for k, v in statuses(work, env).items() if v == "survived" and k not in equivalent)
        copy_tree(work, source)
        write_config(work, source, tests)
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        print(f"== {name}: testing the {len(rechecked)} survivors again with the current tests", flush=True)
    elif resume and (work / "setup.cfg").is_file():
        # mutmut keeps each tested mutant's result in mutants/; it tests only the rest, in the
        # copy of the tree (and with the tests) the run was started with
        print(f"== {name}: resuming the run in {work}", flush=True)
    else:
        work = prepare(name, source, tests)
    print(f"== {name}: mutating {source}; tests: {' '.join(tests)}", flush=True)
    start = time.monotonic()
    log_path = work / ("mutmut-recheck.log" if recheck else "mutmut-run.log")
    if recheck and not rechecked:
        done = subprocess.CompletedProcess([], 0)
    else:
        with open(log_path, "w") as log:
            done = mutmut(work, "run", "--max-children", str(jobs), *rechecked, env=env, log=log)
    seconds = time.monotonic() - start
    status = statuses(work, env)
    counts = {s: sum(1 for v in status.values() if v == s) for s in STATUSES}
    counts = {k: v for k, v in counts.items() if v}
    survivors = sorted(k for k, v in status.items() if v in ("survived", "suspicious", "no tests"))
    with open(work / "survivors.txt", "w") as f:
        for key in survivors:
            f.write(mutmut(work, "show", key, env=env).stdout + "\n")
    decided = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("survived", 0)
    summary = {"module": name, "file": source, "tests": tests, "mutants": len(status),
               "counts": counts, "score": round((decided - counts.get("survived", 0)) / decided, 4) if decided else None,
               "wall_seconds": round(seconds), "jobs": jobs, "exit_code": done.returncode,
               "survivors": survivors}
    if recheck:
        summary["rechecked"] = {"survivors_before": len(rechecked),
                                "killed_now": sum(1 for k in rechecked if status.get(k) != "survived")}
    # the score that counts: killed among the mutants that change behaviour
    judged = sum(1 for k, v in status.items() if v == "survived" and k in equivalent)
    non_equivalent = decided - judged
    summary["judged_equivalent_or_harmless"] = judged
    summary["non_equivalent_killed"] = [decided - counts.get("survived", 0), non_equivalent]
    summary["survivors_not_judged"] = sorted(k for k, v in status.items()
                                             if v == "survived" and k not in equivalent)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    score = f"{100 * summary['score']:.1f}%" if summary["score"] is not None else "n/a"
    real = f"{100 * (decided - counts.get('survived', 0)) / non_equivalent:.1f}%" if non_equivalent else "n/a"
    print(f"   {len(status)} mutants {counts}; killed {score} of the decided ones, {real} of the "
          f"non-equivalent ones ({judged} survivors judged equivalent or harmless); "
          f"{seconds / 60:.1f} min ({jobs} jobs); survivors: {work / 'survivors.txt'}", flush=True)
    if done.returncode != 0:
        print(f"   mutmut exited {done.returncode}: see {log_path}", flush=True)
    return summary


# --------------------------------------------------------------------------- results and report
def file_sha1(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None


def record_result(summary: dict, recheck: bool, results: Path = RESULTS, root: Path = ROOT,
                  today: str | None = None) -> dict:
    """Keeps a run's summary as results/<name>.json: what the report is made of. A run replaces
    the module's record; a --recheck updates its counts and adds itself to the record's rechecks."""
    path = results / (summary["module"].replace("/", "-") + ".json")
    today = today or datetime.date.today().isoformat()
    current = {k: summary[k] for k in ("counts", "judged_equivalent_or_harmless", "non_equivalent_killed",
                                       "survivors_not_judged")}
    old = json.loads(path.read_text()) if path.is_file() else None
    if recheck and old is not None:
        record = dict(old, **current)
        record["rechecks"] = old.get("rechecks", []) + [dict(summary["rechecked"], finished=today,
                                                             wall_seconds=summary["wall_seconds"])]
    else:
        record = {"module": summary["module"], "file": summary["file"], "finished": today,
                  "file_sha1": file_sha1(root / summary["file"]), "mutants": summary["mutants"], **current,
                  "wall_seconds": summary["wall_seconds"], "jobs": summary["jobs"], "complete": True,
                  "rechecks": [], "notes": []}
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record


def _percent(killed: int, of: int) -> str:
    return f"{killed}/{of} ({100 * killed / of:.1f}%)" if of else "n/a"


def write_report(results: Path = RESULTS, out: Path = REPORT, root: Path = ROOT,
                 equivalent: Path = EQUIVALENT) -> str:
    """tests/MUTATION.md from the records in `results`: a row per module, whether the modules
    with a bar meet it, whether a module changed since its run, and per module the notes of its
    record and of its judged-survivor file."""
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    lines = ["# Mutation scores", "",
             "Written by `tools/mutation.py` from `tests/mutation/*.json` (each run keeps its result there; "
             "`python tools/mutation.py --report` writes this again). Do not edit by hand. How to run it and "
             "what the scores mean: `tests/README.md`.", "",
             f"Bar: at least {BAR:.0%} of the non-equivalent mutants killed, for "
             + ", ".join(f"`{m}`" for m in BARRED) + ".", "",
             "| module | run | mutants | killed | timeout | survived | without a test | judged eq./harmless "
             "| non-equivalent killed | bar | module changed since the run (when this was written) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        c = r["counts"]
        killed, of = r["non_equivalent_killed"]
        bar = ("met" if of and killed / of >= BAR else "NOT met") if r["module"] in BARRED else ""
        sha, path = r.get("file_sha1"), root / r["file"]
        changed = "unknown" if sha is None else ("no" if file_sha1(path) == sha else "yes: run it again")
        run = r["finished"] + ("" if r.get("complete", True) else ", stopped before the end")
        for recheck in r.get("rechecks", []):
            run += f"; recheck {recheck['finished']}: {recheck['killed_now']} of {recheck['survivors_before']} killed"
        lines.append(f"| `{r['module']}` | {run} | {r['mutants']} | {c.get('killed', 0)} | {c.get('timeout', 0)} "
                     f"| {c.get('survived', 0)} | {c.get('no tests', 0)} | {r['judged_equivalent_or_harmless']} "
                     f"| {_percent(killed, of)} | {bar} | {changed} |")
    lines += ["", "Score = killed (timeouts count as killed) among the tested mutants that change behaviour: "
              "survivors judged equivalent, harmless (display text) or not observable on a CPU are left out; "
              "they are listed with the reason in `tools/mutation_equivalent/<module>.txt`.", ""]
    for r in records:
        eq_file = equivalent / (r["module"].replace("/", "-") + ".txt")
        comments = ([line.lstrip("# ").rstrip() for line in eq_file.read_text().splitlines()
                     if line.startswith("#")] if eq_file.is_file() else [])
        minutes = f"{r['wall_seconds'] / 60:.1f} min" if r.get("wall_seconds") else "time not recorded"
        lines += [f"## `{r['module']}` ({r['file']})", "",
                  f"Run {r['finished']}, {minutes}, {r.get('jobs') or '?'} mutants at a time."]
        lines += [f"- {note}" for note in r.get("notes", [])]
        if r.get("survivors_not_judged"):
            lines.append("- Survivors not judged yet: " + ", ".join(f"`{k}`" for k in r["survivors_not_judged"]))
        if comments:
            lines += ["", f"From `tools/mutation_equivalent/{eq_file.name}`:", ""]
            lines += [f"> {c}" if c else ">" for c in comments]
        lines.append("")
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules ({', '.join(MODULES)}) or groups ({', '.join(GROUPS)})")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATION_JOBS", "2")),
                    help="mutants tested at once (default 2, or $MUTATION_JOBS)")
    ap.add_argument("--list", action="store_true", help="list the modules and their tests")
    ap.add_argument("--report", action="store_true",
                    help=f"write {REPORT.relative_to(ROOT)} from {RESULTS.relative_to(ROOT)}/ and stop")
    ap.add_argument("--recheck", action="store_true",
                    help="test the survivors of each module's last run again with the current tests "
                         "(after tests were added for them), but those judged equivalent in "
                         "tools/mutation_equivalent/; the module's code must be unchanged")
    ap.add_argument("--resume", action="store_true",
                    help="continue a stopped run of each module where it was (its copy of the tree, its "
                         "results so far) instead of starting afresh; the wall time is this part's")
    args = ap.parse_args()
    if args.report:
        write_report()
        print(f"wrote {REPORT.relative_to(ROOT)}")
        return 0
    if args.list or not args.modules:
        for name, (source, tests) in MODULES.items():
            print(f"{name:20s} {source:40s} {' '.join(tests)}")
        return 0
    names = [m for arg in args.modules for m in GROUPS.get(arg, [arg])]
    unknown = [m for m in names if m not in MODULES]
    if unknown:
        print(f"unknown module(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    missing = [t for m in names for t in missing_tests(MODULES[m][1])]
    if missing:
        print(f"tests named in tools/mutation.py that the tree lacks: {', '.join(missing)}", file=sys.stderr)
        return 2
    # one torch thread per mutant process (the jobs run side by side); CI's strictness is off:
    # a test that cannot run here skips and mutmut counts it as passing, which a survivor shows
    env = dict(os.environ, QWEN_TTS_TEST_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    summaries = []
    for name in names:
        summaries.append(run(name, args.jobs, env, args.resume, args.recheck))
        record_result(summaries[-1], args.recheck)
        write_report()
    (OUT / "last-run.json").write_text(json.dumps(summaries, indent=2) + "\n")
    print(f"results kept in {RESULTS.relative_to(ROOT)}/; report: {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
