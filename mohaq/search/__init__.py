"""The precision search engine: settings, space, objectives, Pareto tools,
algorithms (``mohaq.search.proposers``), the loop, evaluators, executors,
persistence, callbacks and reports. The beacon stage builds on it in
``mohaq.beacons``."""

from mohaq.search.callbacks import SearchCallback, SearchInfo, SearchProgress
from mohaq.search.evaluators import (
    AnalyticEvaluator,
    BuiltEvaluator,
    EvaluationResult,
    Evaluator,
    PTQEvaluator,
    PTQEvaluatorSpec,
)
from mohaq.search.executors import ExecutorError, InProcess, ProcessPool, Submitit
from mohaq.search.lock import RunDirectoryInUseError, RunLock, RunLockError
from mohaq.search.metric_evaluator import MetricEvaluator, MetricEvaluatorSpec
from mohaq.search.objectives import ObjectiveError, parse_constraints
from mohaq.search.pareto import ParetoArchive, dominates, hypervolume, non_dominated_sort
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import (
    AlgorithmError,
    AlgorithmOptions,
    Proposer,
    available_algorithms,
    register_proposer,
)
from mohaq.search.proposers.haq import HAQ
from mohaq.search.proposers.nevergrad_family import Nevergrad
from mohaq.search.proposers.nsga2 import NSGA2
from mohaq.search.proposers.random_search import RandomSearch
from mohaq.search.records import (
    DamagedLogError,
    EvaluationLog,
    EvaluationRecord,
    ResumeError,
    RunStorageError,
)
from mohaq.search.report import compare_hypervolumes, front_of
from mohaq.search.run import SearchResult, run_search, search_model
from mohaq.search.settings import DEFAULT_ALGORITHM, SearchConfigError, SearchSettings
from mohaq.search.space import SearchSpace, SearchSpaceError

__all__ = [
    "DEFAULT_ALGORITHM",
    "HAQ",
    "NSGA2",
    "AlgorithmError",
    "AlgorithmOptions",
    "AnalyticEvaluator",
    "BuiltEvaluator",
    "DamagedLogError",
    "EvaluationLog",
    "EvaluationRecord",
    "EvaluationResult",
    "Evaluator",
    "ExecutorError",
    "InProcess",
    "MetricEvaluator",
    "MetricEvaluatorSpec",
    "Nevergrad",
    "ObjectiveError",
    "PTQEvaluator",
    "PTQEvaluatorSpec",
    "ParetoArchive",
    "ProcessPool",
    "Proposer",
    "RandomSearch",
    "ResumeError",
    "RunDirectoryInUseError",
    "RunLock",
    "RunLockError",
    "RunStorageError",
    "SearchCallback",
    "SearchConfigError",
    "SearchInfo",
    "SearchProblem",
    "SearchProgress",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "SearchSpaceError",
    "Submitit",
    "available_algorithms",
    "compare_hypervolumes",
    "dominates",
    "front_of",
    "hypervolume",
    "non_dominated_sort",
    "parse_constraints",
    "register_proposer",
    "run_search",
    "search_model",
]
