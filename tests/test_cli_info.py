"""`midas info` through Typer's runner."""

import json

from typer.testing import CliRunner

from midas_cli.cli.app import app

runner = CliRunner()


def test_info_counts_the_paper_config_without_weights():
    result = runner.invoke(app, ["info", "paper", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info["params"]) >= {"backbone", "head", "autoencoder", "conditions"}
    assert all(isinstance(v, int) for v in info["params"].values())
    assert 2.7e9 < info["params"]["backbone"] < 2.9e9  # Qwen2.5-3B without its token embeddings
    assert 0.4e9 < info["params"]["head"] < 0.6e9
    assert info["tokens_per_frame"] == 60 and info["resolution"] == [640, 384] and info["fps"] == 12.5


def test_info_reports_checkpoint_size(tiny_model, tmp_path):
    from midas_cli.model.checkpoint import save_checkpoint

    path = save_checkpoint(tiny_model, tmp_path / "ckpt")
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert info["checkpoint_bytes"] == on_disk > 0
    assert info["params"]["head"] == sum(p.numel() for p in tiny_model.head.parameters())


def test_info_on_a_missing_checkpoint_is_one_line(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope: no such checkpoint folder" in result.stderr
    assert "Traceback" not in result.output


def test_help_texts_reflow_and_keep_their_brackets():
    """Docstrings are written wrapped at 100 columns: the help must join their lines, and names
    such as the `[tensorboard]` extra must not be taken for markup and vanish."""
    from midas_cli.training.recipe import shipped_training_recipes

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "[tensorboard] extra" in text
    assert "running the same recipe again resumes" in text  # one sentence, not broken at the docstring's newline
    assert all(name in text for name in shipped_training_recipes())
