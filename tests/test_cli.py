"""The command line: help, dataset building, the tracing summary."""

import subprocess
import sys

from sfc_relp.cli import main


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sfc_relp", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_help_lists_subcommands():
    proc = _run("--help")
    assert proc.returncode == 0
    for command in ("datasets", "trace", "zoo"):
        assert command in proc.stdout


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("sfc-relp") or str(__import__("pathlib").Path(sys.executable).parent / "sfc-relp")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "datasets" in proc.stdout


def test_datasets_build(tmp_path):
    proc = _run("datasets", "build", "--out", str(tmp_path / "d"), "--n-train", "8", "--n-test", "4")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "d").glob("*.jsonl"))) == 10


def test_trace_summary(small_bundle, capsys):
    model_dir, dicts = small_bundle
    assert main(["trace", "--model", str(model_dir), "--dictionaries", str(dicts),
                 "--dataset", "ioi", "--n-examples", "3"]) == 0
    out = capsys.readouterr().out
    assert "10 dictionaries spliced" in out and "resid_2" in out
    change = float(out.split("max |logit change| from splicing: ")[1].split()[0])
    assert change < 1e-5


def test_trace_unknown_dataset_is_one_line(small_bundle, capsys):
    model_dir, dicts = small_bundle
    assert main(["trace", "--model", str(model_dir), "--dictionaries", str(dicts),
                 "--dataset", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sfc-relp: error: unknown dataset 'nope'") and err.count("\n") == 1
