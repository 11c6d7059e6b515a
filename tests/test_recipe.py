"""Recipes: `model` may name a config file or checkpoint; evaluation during training is opt-in for real data."""

from __future__ import annotations

import pytest
import yaml

from midas_cli.errors import MidasError
from midas_cli.model.config import MidasConfig, preset
from midas_cli.training.recipe import EvalDuringTraining, load_recipe, shipped_training_recipes


def _write_recipe(tmp_path, **fields) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), **fields}))
    return str(path)


@pytest.fixture
def saved_config(tmp_path):
    cfg = preset("tiny")
    cfg.window_chunks = 3  # differs from the preset, so the test sees the file was read
    path = tmp_path / "ckpt" / "config.json"
    path.parent.mkdir()
    cfg.save(path)
    return path


# ---- model: a config file -----------------------------------------------------------------------


def test_a_recipe_naming_a_saved_config_gives_that_config(tmp_path, saved_config):
    for name in (saved_config, saved_config.parent):  # the file, or the checkpoint folder holding it
        cfg = load_recipe(_write_recipe(tmp_path, model=str(name))).model_config()
        assert cfg == MidasConfig.load(saved_config)
        assert cfg.window_chunks == 3


def test_model_overrides_apply_on_top_of_a_config_file(tmp_path, saved_config):
    recipe = load_recipe(_write_recipe(tmp_path, model=str(saved_config),
                                       model_overrides={"noise.sigma_max": 0.0}), ["model_overrides.head.steps=2"])
    cfg = recipe.model_config()
    assert cfg.noise.sigma_max == 0.0 and cfg.head.steps == 2 and cfg.window_chunks == 3


def test_a_relative_config_path_is_read_against_the_current_directory(tmp_path, saved_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe(_write_recipe(tmp_path, model="ckpt/config.json")).model_config().window_chunks == 3


def test_a_checkpoints_component_subfolders_come_with_its_config(tmp_path, saved_config):
    """A checkpoint's config names its autoencoder by sub-folder; the run must find it there."""
    cfg = MidasConfig.load(saved_config)
    cfg.autoencoder.pretrained = "autoencoder"
    cfg.save(saved_config)
    (saved_config.parent / "autoencoder").mkdir()
    got = load_recipe(_write_recipe(tmp_path, model=str(saved_config.parent))).model_config()
    assert got.autoencoder.pretrained == str(saved_config.parent / "autoencoder")


def test_a_missing_config_file_fails_naming_it(tmp_path):
    with pytest.raises(MidasError, match=r"model: .*nope\.json: not a preset") as e:
        load_recipe(_write_recipe(tmp_path, model=str(tmp_path / "nope.json")))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content, why", [
    ('{"backbone": {"hidden_size": ', "not valid JSON"),
    ('{"backbone": {"hidden": 3}}', "unknown field 'hidden'"),
])
def test_a_broken_config_file_fails_naming_it(tmp_path, content, why):
    bad = tmp_path / "config.json"
    bad.write_text(content)
    with pytest.raises(MidasError, match="config.json") as e:
        load_recipe(_write_recipe(tmp_path, model=str(bad)))
    assert why in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_a_wrong_override_on_a_config_file_fails_with_its_name(tmp_path, saved_config):
    with pytest.raises(MidasError, match=r"model_overrides: backbone\.hidden: no such model config field"):
        load_recipe(_write_recipe(tmp_path, model=str(saved_config), model_overrides={"backbone.hidden": 3}))
    with pytest.raises(MidasError, match=r"model_overrides\.head\.steps: expected an integer"):
        load_recipe(_write_recipe(tmp_path, model=str(saved_config), model_overrides={"head.steps": "four"}))


# ---- eval: on for synthetic data, opt-in for real data -------------------------------------------

SYNTH = {"dir": "data/synth-train", "synth": {"clips": 2}}
REAL = {"dir": "data/real"}


@pytest.mark.parametrize("data, expect_on", [(SYNTH, True), (REAL, False)])
def test_evaluation_during_training_defaults_to_on_only_for_synthetic_data(tmp_path, data, expect_on):
    recipe = load_recipe(_write_recipe(tmp_path, model="tiny", data=data))
    assert (recipe.eval == EvalDuringTraining()) if expect_on else recipe.eval is None
    # `auto` written out, or as an override, means the same
    assert load_recipe(_write_recipe(tmp_path, model="tiny", data=data, eval="auto")).eval == recipe.eval
    assert load_recipe(_write_recipe(tmp_path, model="tiny", data=data), ["eval=auto"]).eval == recipe.eval


def test_eval_null_switches_evaluation_off_on_synthetic_data(tmp_path):
    assert load_recipe(_write_recipe(tmp_path, model="tiny", data=SYNTH, eval=None)).eval is None
    assert load_recipe(_write_recipe(tmp_path, model="tiny", data=SYNTH), ["eval=null"]).eval is None


def test_an_eval_section_switches_evaluation_on_for_real_data_with_a_warning(tmp_path, capsys):
    recipe = load_recipe(_write_recipe(tmp_path, model="tiny", data=REAL, eval={"cases": 1}))
    assert recipe.eval == EvalDuringTraining(cases=1)
    assert "warning: eval is on but the data is not synthetic" in capsys.readouterr().err
    load_recipe(_write_recipe(tmp_path, model="tiny", data=SYNTH, eval={"cases": 1}))
    assert "warning" not in capsys.readouterr().err  # synthetic data: nothing to warn about


def test_a_wrong_eval_value_fails_with_its_name(tmp_path):
    with pytest.raises(MidasError, match=r"recipe\.yaml\.eval: .*'sometimes'"):
        load_recipe(_write_recipe(tmp_path, model="tiny", eval="sometimes"))


def test_the_shipped_training_recipes_are_found():
    names = shipped_training_recipes()
    assert names[0] == "demo" and {"demo_base", "demo_no_noise"} <= set(names)
    assert "judges" not in names and "render_examples" not in names


@pytest.mark.parametrize("name", shipped_training_recipes())
def test_shipped_recipes_keep_their_evaluation(name):
    # Only the short from-scratch runs evaluate while training; the fine-tuning steps are chosen
    # on long free-running rollouts (`midas eval --seconds 60`) instead.
    assert (load_recipe(name).eval is not None) == (name in {"demo_base", "demo_no_noise"})


def test_a_resolved_recipe_is_plain_data(tmp_path):
    """`train` writes asdict(recipe) to OUTPUT/recipe.json: the `auto` default must be gone by then."""
    import json
    from dataclasses import asdict

    for data in (SYNTH, REAL):
        d = json.loads(json.dumps(asdict(load_recipe(_write_recipe(tmp_path, model="tiny", data=data)))))
        assert d["eval"] in (None, asdict(EvalDuringTraining()))
