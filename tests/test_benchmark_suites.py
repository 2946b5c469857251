"""The benchmark suites' bookkeeping: reuse only matching runs, pair STR with its fixed-rank twin, judge claims.

``benchmarks`` is a package in the repository root, importable as the README runs the tests
(``python -m pytest`` from the root puts the root on ``sys.path``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import rank_vs_accuracy, runner, suite
from strrnn.cli import train

REPO = Path(__file__).resolve().parents[1]

FSDD = REPO.parent / "shared" / "data" / "fsdd"
FLAGS = ["--dataset", "fsdd", "--epochs", "3", "--mode", "lowrank", "--threshold-decay", "0.6", "--seed", "1"]


def finished_run(folder: Path, flags: list[str], **summary) -> Path:
    """A run folder as strrnn.train leaves it (config.yaml + summary.json), without training."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**train.parse_config(flags), "out": str(folder)}))
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    run = finished_run(tmp_path / "r", FLAGS, test_acc=0.5)
    assert runner.stale_settings(run, FLAGS) == []
    # operational flags and the data's location do not make a run stale
    assert runner.stale_settings(run, [*FLAGS, "--data-dir", "/elsewhere", "--num-workers", "2"]) == []
    assert runner.train_run(run, FLAGS, tmp_path / "r.log") == {"test_acc": 0.5}
    assert not (tmp_path / "r.log").exists()  # reused: no process was started

    longer = [*FLAGS[:3], "5", *FLAGS[4:]]
    assert runner.stale_settings(run, longer) == ["epochs: 3 there, 5 asked"]
    with pytest.raises(runner.StaleRunError, match="epochs: 3 there, 5 asked.*delete it or pass another --out"):
        runner.train_run(run, longer, tmp_path / "r.log")


def test_a_dense_run_is_not_stale_for_knobs_its_mode_never_reads(tmp_path):
    dense = ["--dataset", "fsdd", "--epochs", "3", "--mode", "dense", "--seed", "1"]
    run = finished_run(tmp_path / "d", dense)
    stored = yaml.safe_load((run / "config.yaml").read_text())  # e.g. a run of an older default strength
    (run / "config.yaml").write_text(yaml.safe_dump({**stored, "strength": 0.3, "threshold_decay": 5.0}))
    assert runner.stale_settings(run, dense) == []
    assert runner.stale_settings(run, [*dense, "--lr", "0.01"]) == ["lr: 0.001 there, 0.01 asked"]
    # a lowrank run reads its decay, and ignores spectral GMP's strength
    str_run = finished_run(tmp_path / "s", FLAGS)
    assert runner.stale_settings(str_run, [*FLAGS[:-4], "--threshold-decay", "0.8", "--seed", "1"]) == [
        "threshold_decay: 0.6 there, 0.8 asked"]
    stored = yaml.safe_load((str_run / "config.yaml").read_text())
    (str_run / "config.yaml").write_text(yaml.safe_dump({**stored, "strength": 0.9}))
    assert runner.stale_settings(str_run, FLAGS) == []


def test_budget_from_paths_compare_resolved(tmp_path, monkeypatch):
    source = tmp_path / "str-run"
    flags = ["--mode", "fixed-rank", "--budget-from", str(source)]
    run = finished_run(tmp_path / "v", flags)
    monkeypatch.setattr(runner, "REPO", tmp_path)
    assert runner.stale_settings(run, ["--mode", "fixed-rank", "--budget-from", "str-run"]) == []
    assert runner.stale_settings(run, ["--mode", "fixed-rank", "--budget-from", "other"]) != []


def test_each_low_rank_run_gets_its_twins_with_its_cell_and_seed(tmp_path):
    run = tmp_path / "lstm-str-3-s2"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"params_str": 4321}))
    flags = ["--mode", "lowrank", "--cell", "lstm", "--threshold-decay", "3", "--seed", "2"]
    name, twin = rank_vs_accuracy.vanilla_twin(run, flags)
    assert name == "fixed-lstm-str-3-s2"
    assert twin == ["--mode", "fixed-rank", "--budget-from", str(run), "--cell", "lstm",
                    "--seed", "2"]  # plain factors: fixed-rank's default
    name, gmp = rank_vs_accuracy.gmp_twin(run, flags)  # spectral GMP at the budget STR reached
    assert name == "lstm-gmpb-3-s2"
    assert gmp == ["--mode", "lowrank-gmp", "--target-params", "4321", "--cell", "lstm", "--seed", "2"]
    assert rank_vs_accuracy.vanilla_twin(tmp_path / "gmpb-3-s2", gmp)[0] == "fixed-gmpb-3-s2"
    assert rank_vs_accuracy.gmp_twin(tmp_path / "gmpb-3-s2", gmp) is None
    assert rank_vs_accuracy.vanilla_twin(Path("out/dense-s0"), ["--mode", "dense"]) is None


def test_claims_pair_seeds_and_compare_with_the_same_cells_full_rank(tmp_path):
    def summary(mode, acc, cell="fastgrnn", strength=0.1, params=(3000, 13200), val=0.9):
        return {"mode": mode, "cell": cell, "factors": "free", "strength": strength, "test_acc": acc,
                "best_val_acc": val, "ranks": {"rnn.cells.0.W": 5, "rnn.cells.0.U": 10}, "params_str": params[0],
                "params_str_dense": params[1], "params_dense": 14412}

    runs = []
    for name, s in {"dense-s0": summary("dense", 0.95), "dense-s1": summary("dense", 0.93),
                    "str-0.1-s0": summary("lowrank", 0.94), "str-0.1-s1": summary("lowrank", 0.92),
                    "fixed-str-0.1-s0": summary("fixed-rank", 0.90, val=0.88),
                    "fixed-str-0.1-s1": summary("fixed-rank", 0.92, val=0.88),
                    "gmpb-0.1-s0": summary("lowrank-gmp", 0.96, strength="3000 params"),
                    "gmpb-0.1-s1": summary("lowrank-gmp", 0.93, strength="3010 params"),
                    "lstm-dense-s0": summary("dense", 0.99, cell="lstm"),
                    "lstm-str-0.1-s0": summary("lowrank", 0.97, cell="lstm", params=(9000, 52800))}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
        runs.append(tmp_path / name)
    groups = rank_vs_accuracy.paired_groups(runs)
    result = rank_vs_accuracy.claims(groups)
    assert result["full_rank_acc"] == pytest.approx({"fastgrnn": 94.0, "lstm": 99.0})
    (fast,) = result["vs_fixed_rank"]
    assert (fast["own"], fast["fixed_rank"], fast["gap"], fast["holds"]) == (93.0, 91.0, 2.0, True)
    within = {row["cell"]: row for row in result["within_0.5_of_full_at_half_params"]}
    assert within["fastgrnn"]["holds"] is False  # 93.0 against 94.0 - 0.5
    assert within["lstm"]["holds"] is False and within["lstm"]["full"] == 99.0  # its own cell's full rank
    (versus,) = result["str_vs_gmp_same_budget"]  # the GMP seeds grouped though their budgets differ
    assert (versus["str_acc"], versus["gmp_acc"], versus["gap"], versus["seeds"]) == (93.0, 94.5, -1.5, 2)
    table = rank_vs_accuracy.paired_table(groups)
    row = ("| fastgrnn | STR, learned thresholds (lowrank) | 0.1 | (5,10) (5,10) | 3,000 (23%) | 93.00 ± 1.41 | "
           "91.00 ± 1.41 | +2.00 / +2.00 | 2 (2 twins) |")
    assert row in table
    assert "| fastgrnn | str-0.1 | 23% / 23% | 93.00 | 94.50 | -1.50 | 2 |" in rank_vs_accuracy.str_vs_gmp_table(groups)


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_rank_vs_accuracy_end_to_end_on_fsdd(tmp_path):
    out = tmp_path / "suite"
    command = [sys.executable, "-m", "benchmarks.rank_vs_accuracy", "--epochs", "1", "--seeds", "0",
               "--decays", "3", "--no-lstm", "--jobs", "2", "--out", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    assert {p.parent.name for p in out.glob("*/summary.json")} == {"dense-s0", "str-3-s0", "fixed-str-3-s0",
                                                                    "gmpb-3-s0", "fixed-gmpb-3-s0"}
    str_run = json.loads((out / "str-3-s0" / "summary.json").read_text())
    twin = json.loads((out / "fixed-str-3-s0" / "summary.json").read_text())
    gmp = json.loads((out / "gmpb-3-s0" / "summary.json").read_text())
    assert twin["ranks"] == str_run["ranks"] and twin["mode"] == "fixed-rank" and twin["factors"] == "free"
    assert gmp["mode"] == "lowrank-gmp" and gmp["params_str"] <= str_run["params_str"]
    table = (out / "table.md").read_text()
    assert "| fastgrnn | STR, learned thresholds (lowrank) | 3 |" in table and "str-3 |" in table
    assert (out / "accuracy_vs_params.png").stat().st_size > 0
    # asking for other settings in the same folder is refused, and nothing there is touched
    before = (out / "dense-s0" / "summary.json").read_text()
    second = subprocess.run([*command[:4], "2", *command[5:]], capture_output=True, text=True, cwd=REPO)
    assert second.returncode != 0
    assert "epochs: 1 there, 2 asked" in second.stderr
    assert (out / "dense-s0" / "summary.json").read_text() == before


def test_suite_runs_each_benchmark_logs_it_and_reports_failures(tmp_path, monkeypatch):
    package = tmp_path / "benchmarks"  # a stand-in repository: python -m benchmarks.<script> runs these
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fine.py").write_text("import sys; print('ratio 1.00', sys.argv[1:])")
    (package / "broken.py").write_text("raise SystemExit('no data here')")
    monkeypatch.setattr(suite, "REPO", tmp_path)
    monkeypatch.setattr(suite, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(suite, "BENCHMARKS", {"fine": ("fine", ["--full"], ["--fast"]), "broken": ("broken", [], []),
                                              "slow": ("missing", ["--x"], None)})
    assert suite.main(["--quick"]) == 1  # one failed, and the suite still ran the other
    out = tmp_path / "results" / "suite" / "quick"
    assert "ratio 1.00 ['--fast']" in (out / "logs" / "fine.log").read_text()
    assert "no data here" in (out / "logs" / "broken.log").read_text()
    table = (out / "suite.md").read_text()
    assert "| fine | `--fast` |" in table and "| ok |" in table and "| broken | `` |" in table and "| failed |" in table
    assert "slow" not in table  # not part of the quick suite
    assert suite.main(["--only", "fine"]) == 0
    assert "['--full']" in (tmp_path / "results" / "suite" / "logs" / "fine.log").read_text()


def test_recorded_commands_name_repository_paths_relatively():
    from benchmarks import REPO, command_line

    line = command_line("benchmarks.rnn_speed", ["--out", str(REPO / "benchmarks" / "x.md"), "--threads", "1",
                                                  "/elsewhere/y.md"])
    assert line == "python -m benchmarks.rnn_speed --out benchmarks/x.md --threads 1 /elsewhere/y.md"
