"""``metaprune zoo`` commands: output, and one-line errors with exit code 1."""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner
from zoo_helpers import entry_dict, write_fake_run_dir, write_index

from metaprune.cli.zoo import app

runner = CliRunner()


def test_publish_list_info_pull(tmp_path, zoo_cache):
    zoo = tmp_path / "zoo"
    published = runner.invoke(app, ["publish", str(write_fake_run_dir(tmp_path / "run")), "--to", str(zoo)])
    assert published.exit_code == 0, published.output
    assert published.stdout.startswith("published mlp-digits-channel-f50 (6 files)")
    index = str(zoo / "index.json")
    listed = runner.invoke(app, ["list", "--pattern", "channel", "--index", index])
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[1].split() == ["mlp-digits-channel-f50", "image-classification", "channel", "50%", "93.75"]
    shown = runner.invoke(app, ["info", "mlp-digits-channel-f50", "--index", index])
    weights = (zoo / "mlp-digits-channel-f50" / "model.safetensors").read_bytes()
    assert f"sha256 {hashlib.sha256(weights).hexdigest()}" in shown.stdout
    assert "FLOPs   dense 2,000,000  pruned 1,000,000" in shown.stdout
    pulled = runner.invoke(app, ["pull", "mlp-digits-channel-f50", "--index", index])
    assert pulled.stdout.strip() == str(zoo_cache / "entries" / "mlp-digits-channel-f50")


def test_card_command_writes_readme_and_chart(tmp_path):
    run_dir = write_fake_run_dir(tmp_path / "run")
    result = runner.invoke(app, ["card", str(run_dir), "--out", str(tmp_path / "card")])
    assert result.exit_code == 0, result.output
    assert "\n---\n\n# run\n" in (tmp_path / "card" / "README.md").read_text()
    assert (tmp_path / "card" / "keep_ratios.png").stat().st_size > 0


def test_errors_are_one_line_on_stderr_with_exit_code_1(tmp_path):
    index = str(write_index(tmp_path / "index.json", entry_dict("tiny", {"m.bin": b"x"}, "http://127.0.0.1:9/")))
    for arguments in (["pull", "tiny", "--offline", "--index", index], ["info", "../etc", "--index", index],
                      ["card", str(tmp_path / "no-run")], ["list", "--index", str(tmp_path / "none.json")]):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 1, arguments
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
        assert "Traceback" not in result.output
