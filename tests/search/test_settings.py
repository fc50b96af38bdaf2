"""SearchSettings: validation, JSON round trip, continuation, the CLI schema."""

from __future__ import annotations

import inspect

import pytest

from mohaq.search import NSGA2, InProcess, ProcessPool, SearchConfigError, SearchSettings, Submitit
from mohaq.search.executors import ExecutorError
from mohaq.search.settings import continue_settings, split_settings, takes_settings


def test_defaults_and_name_resolution() -> None:
    settings = SearchSettings(algorithm="nsga2", workers=2)
    assert settings.algorithm == NSGA2() and settings.algorithm_name == "nsga2"
    assert isinstance(settings.executor, ProcessPool)  # auto: processes for 2 workers
    assert isinstance(SearchSettings().executor, InProcess)
    assert SearchSettings().algorithm_name == "surrogate"  # the quickstart benchmark's winner
    assert isinstance(SearchSettings(executor="submitit").executor, Submitit)


def test_invalid_values_name_what_is_allowed() -> None:
    with pytest.raises(SearchConfigError, match="budget must be an integer >= 1, got 0"):
        SearchSettings(budget=0)
    with pytest.raises(
        SearchConfigError, match="bit_choices is empty; give at least one precision"
    ):
        SearchSettings(bit_choices=[])
    with pytest.raises(SearchConfigError, match="workers=3 needs a process or submitit executor"):
        SearchSettings(workers=3, executor="inline")
    with pytest.raises(ExecutorError, match="unknown executor 'gpu'; valid: auto, inline"):
        SearchSettings(executor="gpu")


def test_json_round_trip_keeps_typed_options() -> None:
    settings = SearchSettings(
        platform="bitfusion",
        constraints={"max_memory_mb": 2},
        bit_choices=[4, 8],
        algorithm=NSGA2(population=12, offspring=4),
        executor=Submitit(cluster="local", parameters={"timeout_min": 5}),
        workers=2,
    )
    data = settings.to_dict()
    assert data["algorithm"] == {
        "name": "nsga2",
        "options": {
            "population": 12, "offspring": 4, "crossover_probability": 0.9,
            "crossover_eta": 15.0, "mutation_eta": 20.0,
        },
    }  # fmt: skip
    assert data["executor"]["name"] == "submitit"
    assert SearchSettings.from_dict(data) == settings
    with pytest.raises(SearchConfigError, match=r"unknown search setting\(s\) \['optimizer'\]"):
        SearchSettings.from_dict({**data, "optimizer": "DE"})


def test_continuation_refuses_a_contradicting_problem_and_takes_run_settings() -> None:
    stored = SearchSettings(platform="silago", objectives=["error", "speedup", "energy"], budget=50)
    same = continue_settings(stored, {"platform": "silago", "budget": 20, "seed": None})
    assert same.budget == 20 and same.platform == "silago" and same.seed == stored.seed
    with pytest.raises(
        SearchConfigError,
        match=r"platform: search 'silago', given 'bitfusion'; bit_choices: search None, given \[4\]",
    ):
        continue_settings(stored, {"platform": "bitfusion", "bit_choices": [4]})


def test_ptq_preset_and_overrides_are_validated_stored_and_part_of_the_problem() -> None:
    from mohaq.quant.ptq import PTQConfig

    assert SearchSettings().ptq_options() == PTQConfig()
    settings = SearchSettings(
        ptq="best", ptq_overrides={"per_channel_weights": True, "adaround_bits": [4]}
    )
    assert settings.ptq_options() == PTQConfig.preset(
        "best", per_channel_weights=True, adaround_bits=(4,)
    )
    assert SearchSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(
        SearchConfigError, match="ptq must be a preset name, one of mohaq, best; got 'fast'"
    ):
        SearchSettings(ptq="fast")
    with pytest.raises(
        SearchConfigError,
        match=r"ptq_overrides: unknown PTQConfig field\(s\) \['rounding'\]; fields: ",
    ):
        SearchSettings(ptq_overrides={"rounding": "ada"})
    with pytest.raises(
        SearchConfigError,
        match="ptq_overrides: per_channel_weights must be True or False; got 'yes'",
    ):
        SearchSettings(ptq_overrides={"per_channel_weights": "yes"})
    # The beacon stage must score with the search's PTQ: a different one is refused.
    assert continue_settings(settings, {"budget": 5}).ptq_options() == settings.ptq_options()
    with pytest.raises(SearchConfigError, match="ptq: search 'best', given 'mohaq'"):
        continue_settings(settings, {"ptq": "mohaq"})


def test_takes_settings_builds_the_command_signature_from_the_dataclass() -> None:
    class Commands:
        @takes_settings(SearchSettings)
        def search(self, checkpoint: str, **settings):
            """Search.

            Args:
                checkpoint: a checkpoint.
            """
            return SearchSettings(**settings)

    parameters = inspect.signature(Commands.search).parameters
    assert list(parameters)[:2] == ["self", "checkpoint"]
    assert parameters["budget"].default == 200 and parameters["budget"].annotation is int
    assert "budget: distinct evaluations, uniform baselines included." in Commands.search.__doc__
    assert Commands().search("c", budget=7).budget == 7
    assert split_settings({"budget": 3, "num_beacons": 2}, SearchSettings) == {"budget": 3}
