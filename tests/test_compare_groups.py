"""strrnn compare: seeds are merged only when every other setting matches, one panel per data set, no "0" columns,
and the ranks-over-epochs plot. The run folders are written here (config.yaml, summary.json, an exported model,
ranks.csv), without training."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from strrnn import artifacts as runs
from strrnn.cli import compare, train

HIDDEN, FEATURES = 8, 32
DENSE_WU = HIDDEN * FEATURES + HIDDEN * HIDDEN  # FastGRNN: W is hidden x input, U hidden x hidden


def fake_run(folder: Path, *flags: str, test_acc: float = 0.5, ranks: dict | None = None) -> Path:
    """A finished run folder as strrnn.train writes it, for ``flags`` (a dense model's export is real)."""
    config = train.parse_config([*flags, "--hidden-size", str(HIDDEN), "--out", str(folder)])
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    shape = SimpleNamespace(input_shape=(99, FEATURES), num_features=FEATURES, num_classes=3,
                            class_names=["a", "b", "c"], normalization=None)
    model = runs.export_model(runs.build_model(config, shape))
    if config["mode"] == "dense":
        runs.save_exported(folder / "exported.pt", model, config, {}, shape)
    ranks = ranks or {}
    params_str = sum(r * (FEATURES if k.endswith("W") else HIDDEN) + r * HIDDEN for k, r in ranks.items())
    summary = {
        "dataset": config["dataset"], "mode": config["mode"], "model": None, "cell": "fastgrnn",
        "hidden_size": HIDDEN, "seed": config["seed"], "epochs": config["epochs"], "factors": config["factors"],
        "weight_decay": config["weight_decay"], "threshold_decay": None,
        "strength": config["threshold_decay"] if config["mode"] == "lowrank" else None, "ranks": ranks,
        "params_str_dense": DENSE_WU if ranks else 0, "params_str": params_str,
        "params_dense": runs.count_params(model), "params_exported": runs.count_params(model) - DENSE_WU + params_str
        if ranks else runs.count_params(model), "test_acc": test_acc,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = ["epoch,module,tensor,mode,rank,sparsity,threshold,params"]
    for epoch in range(4):
        for key, rank in ranks.items():
            module, _, tensor = key.rpartition(".")
            lines.append(f"{epoch},{module},{tensor},{config['mode']},{max(rank, HIDDEN - 2 * epoch)},,0.1,0")
    (folder / "ranks.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_runs_that_differ_in_pooling_are_not_seeds_of_one_configuration(tmp_path):
    last = fake_run(tmp_path / "last", "--dataset", "google12", "--mode", "dense", "--pooling", "last",
                    test_acc=0.457)
    mean = fake_run(tmp_path / "mean", "--dataset", "google12", "--mode", "dense", "--pooling", "mean",
                    test_acc=0.635)
    table = compare.compare([last, mean])
    assert len(table) == 2 and list(table["seeds"]) == [1, 1]
    assert sorted(table["settings"]) == ["pooling=last", "pooling=mean"]
    assert sorted(table["test_acc_mean"]) == [0.457, 0.635]
    assert compare.differences(table) == ["google12: groups differ in: pooling"]
    assert "pooling=mean" in compare.to_markdown(table)


def test_seeds_of_one_configuration_are_merged_and_operational_settings_do_not_split(tmp_path):
    flags = ["--dataset", "google12", "--mode", "dense"]
    a = fake_run(tmp_path / "s0", *flags, "--seed", "0", test_acc=0.6)
    b = fake_run(tmp_path / "s1", *flags, "--seed", "1", "--logger", "tensorboard", "--num-workers", "2",
                 test_acc=0.8)
    stored = yaml.safe_load((b / "config.yaml").read_text())
    (b / "config.yaml").write_text(yaml.safe_dump({**stored, "strength": 0.9}))  # dense never reads --strength
    table = compare.compare([a, b])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["seeds"] == 2 and row["test_acc_mean"] == pytest.approx(0.7)
    assert row["settings"] == "" and compare.differences(table) == []


def test_dense_row_counts_its_dense_w_and_u(tmp_path):
    dense = fake_run(tmp_path / "dense", "--dataset", "fsdd", "--mode", "dense")
    table = compare.compare([dense])
    row = table.iloc[0]
    assert row["params_str"] == row["params_str_dense"] == DENSE_WU
    assert row["params_str_pct"] == 100.0
    line = compare.to_markdown(table).splitlines()[-1]
    assert f"| {DENSE_WU:,} (100%) |" in line
    assert all(cell.strip() != "0" for cell in line.split("|"))


def test_fixed_rank_twins_at_the_same_ranks_are_seeds_whatever_folder_gave_them(tmp_path):
    ranks = {"rnn.cells.0.W": 3, "rnn.cells.0.U": 4}
    str_runs = [fake_run(tmp_path / f"str-s{s}", "--dataset", "fsdd", "--seed", str(s), ranks=ranks) for s in (0, 1)]
    twins = [fake_run(tmp_path / f"vanilla-s{s}", "--dataset", "fsdd", "--mode", "fixed-rank", "--seed", str(s),
                      "--budget-from", str(run), ranks=ranks) for s, run in enumerate(str_runs)]
    explicit = fake_run(tmp_path / "explicit", "--dataset", "fsdd", "--mode", "fixed-rank", "--rank-w", "3",
                        "--rank-u", "4", "--seed", "2", ranks=ranks)
    table = compare.compare([*str_runs, *twins, explicit])
    assert sorted(zip(table["mode"], table["seeds"])) == [("fixed-rank", 3), ("lowrank", 2)]
    assert compare.differences(table) == ["fsdd: groups differ in: factors, mode"]


def test_two_data_sets_get_two_panels(tmp_path):
    fsdd = fake_run(tmp_path / "fsdd", "--dataset", "fsdd", "--mode", "dense", test_acc=0.9)
    google = fake_run(tmp_path / "google", "--dataset", "google12", "--mode", "dense", test_acc=0.6)
    table = compare.compare([fsdd, google])
    figure = compare.plot(table, tmp_path / "p.png", title="both")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert sorted(ax.get_title() for ax in figure.axes) == ["fsdd", "google12"]
    assert figure.get_suptitle() == "both"
    # the differing recipe (pooling, lr, augment) is not a difference between groups: data sets are never merged
    assert compare.differences(table) == []


def test_ranks_plot_draws_each_tensor_over_the_epochs(tmp_path):
    ranks = {"rnn.cells.0.W": 3, "rnn.cells.0.U": 4}
    lowrank = fake_run(tmp_path / "str", "--dataset", "fsdd", ranks=ranks)
    dense = fake_run(tmp_path / "dense", "--dataset", "fsdd", "--mode", "dense")
    frame = compare.read_ranks(lowrank)
    assert list(frame[frame["tensor"] == "rnn.cells.0.W"]["rank"]) == [8, 6, 4, 3]
    assert compare.read_ranks(dense).empty
    figure = compare.plot_ranks([lowrank, dense], tmp_path / "ranks.png")
    assert (tmp_path / "ranks.png").stat().st_size > 1000
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["rnn.cells.0.W", "rnn.cells.0.U"]
    with pytest.raises(ValueError, match="none of the runs logged a rank"):
        compare.plot_ranks([dense], tmp_path / "none.png")


def test_cli_prints_the_split_settings_and_writes_the_ranks_plot(tmp_path, capsys):
    ranks = {"rnn.cells.0.W": 3, "rnn.cells.0.U": 4}
    folders = [fake_run(tmp_path / "a", "--dataset", "fsdd", "--pooling", "last", ranks=ranks),
               fake_run(tmp_path / "b", "--dataset", "fsdd", "--pooling", "mean", ranks=ranks)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compare.main([*map(str, folders), "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png"),
                             "--ranks-plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "fsdd: groups differ in: pooling" in out
    assert (tmp_path / "r.png").is_file() and (tmp_path / "t.png").is_file()
    dense = fake_run(tmp_path / "dense", "--dataset", "fsdd", "--mode", "dense")
    assert compare.main([str(dense), "--csv", str(tmp_path / "u.csv"), "--plot", str(tmp_path / "u.png"),
                         "--ranks-plot", str(tmp_path / "none.png")]) == 2
    assert "none of the runs logged a rank" in capsys.readouterr().err


def test_the_table_names_run_folders_relative_to_where_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fake_run(tmp_path / "runs" / "d", "--dataset", "fsdd", "--mode", "dense")
    table = compare.compare([run])  # given absolute: written relative, so a committed table names no machine
    assert list(table["runs"]) == [str(Path("runs") / "d")]
    elsewhere = compare.portable_path("/somewhere/else")
    assert elsewhere == "/somewhere/else"
