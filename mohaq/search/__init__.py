"""Precision search: space, objectives, Pareto tools, evaluators, controller, reports."""

from mohaq.search.beacon_stage import BeaconSearchResult, run_beacon_search
from mohaq.search.controller import (
    SearchConfigError,
    SearchController,
    SearchResult,
    feasible_front,
    run_search,
)
from mohaq.search.evaluator import AnalyticEvaluator, PTQEvaluator, PTQEvaluatorSpec
from mohaq.search.objectives import ObjectiveError, parse_constraints
from mohaq.search.optimizers import DEFAULT_OPTIMIZER, NSGA2, OptimizerNameError
from mohaq.search.pareto import crowding_distance, dominates, hypervolume, non_dominated_sort
from mohaq.search.persistence import EvaluationLog, EvaluationRecord, ResumeError
from mohaq.search.report import compare_hypervolumes
from mohaq.search.space import SearchSpace, SearchSpaceError

__all__ = [
    "BeaconSearchResult",
    "run_beacon_search",
    "DEFAULT_OPTIMIZER",
    "NSGA2",
    "AnalyticEvaluator",
    "EvaluationLog",
    "EvaluationRecord",
    "ObjectiveError",
    "OptimizerNameError",
    "PTQEvaluator",
    "PTQEvaluatorSpec",
    "ResumeError",
    "SearchConfigError",
    "SearchController",
    "SearchResult",
    "SearchSpace",
    "SearchSpaceError",
    "compare_hypervolumes",
    "crowding_distance",
    "dominates",
    "feasible_front",
    "hypervolume",
    "non_dominated_sort",
    "parse_constraints",
    "run_search",
]
