"""The search of a sweep's ``tune:`` block (docs/sweeps.md).

Per method and setting (a combination of the grid's keys but ``seed``), an Optuna study
chooses ``budget`` configurations from the method's ``space`` (a grid sampler when every
key lists candidates, seeded: all of them when they fit the budget, else a seeded random
subset; TPE, seeded, when a key is a range). With a range, TPE's first trials (its random
start-up, up to 10) are common random numbers: trial i gives a key the same value in every
method's study, drawn by a Latin hypercube per key (``shared_draws``), so the methods try
the same learning rates, batch sizes and weight decays and differ in what they add; the
draw covers each range's strata instead of leaving one method's trials all at one end. A
trial is one configuration run on every tuning seed; its value is the mean selection metric
at the final round. The studies live in ``<out-dir>/tune.db`` (SQLite) and a trial's runs
in their own folders, so an interrupted search resumes: finished runs are read back, a run
stopped midway resumes from its checkpoint, and a trial cut off is asked again. Then
``simulations.selection`` chooses on the tuning rows, and the chosen configuration runs on
the evaluation seeds (``grid: seed``). ``results.csv`` holds both phases (columns ``phase``, ``trial``).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import yaml

from simulations import parallel, selection
from simulations.config import defaults, shared_groups

TUNE_KEYS = ("seeds", "select", "budget", "space", "follow")
NOT_SEARCHED = ("method", "seed", "run-name", "out-dir", "resume", "overwrite")


class TuneError(ValueError):
    """A ``tune:`` block that cannot be run as written."""


def _fail(path: Path, message: str) -> None:
    raise TuneError(f"{path}: tune: {message}")


def owner(key: str) -> str | None:
    """The method whose own key this is (None for a shared key)."""
    from common.keys import fields
    from simulations.methods import METHODS

    if any(key in fields(g) for g in shared_groups()):
        return None
    for name, method in METHODS.items():
        if method.strategy.keys is not None and key in fields(method.strategy.keys):
            return name
    return None


def uses(method: str, key: str) -> bool:
    """Whether ``method`` reads ``key``: a shared key, or one of its own keys."""
    from common.keys import fields
    from simulations.methods import METHODS

    if owner(key) is None:
        return True
    own = METHODS[method].strategy.keys if method in METHODS else None
    return own is not None and key in fields(own)


def replaced(method: str) -> dict[str, str]:
    """The shared keys ``method`` replaces with its own (``BaseStrategy.replaced_keys``)."""
    from simulations.methods import METHODS

    return METHODS[method].strategy.replaced_keys if method in METHODS else {}


def fixed_keys(own: dict, method) -> set[str]:
    """The keys a methods: block gives ``method`` one value of: part of that method's
    setting, not in run names and not a setting key of every method."""
    return {k for k, v in own.get(method, {}).items() if len(v) == 1}


def _check_space(path: Path, method: str, key: str, spec) -> None:
    where = f"space: {method}: {key}"
    if isinstance(spec, list):
        if not spec or any(isinstance(v, (list, dict)) for v in spec) or len(set(map(str, spec))) < len(spec):
            _fail(path, f"{where} must be a non-empty list of distinct values or {{low: , high: , log: }}")
        return
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log"}:
        _fail(path, f"{where} must be a list of candidates or {{low: , high: , log: true|false}}, got {spec!r}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        _fail(path, f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
    if not isinstance(spec.get("log", False), bool) or (spec.get("log") and low <= 0):
        _fail(path, f"{where}: log must be true or false, and log needs low > 0")
    if isinstance(defaults().get(key), bool) or not isinstance(defaults().get(key), (int, float)):
        _fail(path, f"{where}: a range needs a numeric key; list the candidates instead")


def _distribution(key: str, spec):
    import optuna.distributions as d

    if isinstance(spec, list):
        return d.CategoricalDistribution(spec)
    if isinstance(defaults()[key], int) and isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return d.IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")))
    return d.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))


def grid_only(space: dict) -> bool:
    """Whether every key of ``space`` lists candidates (a grid sampler), none a range (TPE)."""
    return all(isinstance(spec, list) for spec in space.values())


TPE_STARTUP = 10  # optuna.samplers.TPESampler's n_startup_trials: its random trials before modelling


def shared_draws(space: dict, n: int, seed: int) -> list[dict]:
    """``n`` configurations of ``space``: each key's values a 1-D Latin hypercube (one value in
    each of ``n`` equal strata of its range, log-scaled where ``log``; categorical candidates
    in equal shares) seeded by (``seed``, the key's name) alone, so a key shared by two
    methods' spaces gets the same values in the same trials whatever else either searches."""
    import zlib

    import numpy as np
    from scipy.stats import qmc

    columns = {}
    for key, spec in space.items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        u = qmc.LatinHypercube(d=1, seed=rng).random(n)[:, 0]
        if isinstance(spec, list):
            columns[key] = [spec[min(int(x * len(spec)), len(spec) - 1)] for x in u]
            continue
        dist = _distribution(key, spec)
        integer = isinstance(dist.high, int)
        top = dist.high + 1 if integer else dist.high  # an integer's last stratum ends past its high
        if dist.log:
            lo, hi = math.log(dist.low), math.log(top)
            values = [math.exp(lo + x * (hi - lo)) for x in u]
        else:
            values = [dist.low + x * (top - dist.low) for x in u]
        columns[key] = [min(int(v), dist.high) for v in values] if integer else [float(v) for v in values]
    return [{key: values[i] for key, values in columns.items()} for i in range(n)]


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def run_done(folder: Path) -> bool:
    """Whether ``folder`` holds a run that reached its last round."""
    try:
        rows = pd.read_csv(folder / "metrics.csv", usecols=["round", "num-server-rounds"])
    except (FileNotFoundError, ValueError, pd.errors.EmptyDataError):
        return False
    return bool(len(rows)) and int(rows["round"].max()) >= int(rows["num-server-rounds"].iloc[-1])


class Search:
    """A sweep's tuning protocol: checked at construction, run by ``run``."""

    def __init__(self, path: Path, tune: dict, base: dict, grid: dict, own: dict, expand: Callable,
                 points: Callable):
        """``expand``/``points``: the sweep's (``simulations/sweep.py``), which imports this module."""
        self.path, self.base, self.own, self.expand, self.points = path, base, own, expand, points
        if not isinstance(tune, dict) or set(tune) - set(TUNE_KEYS) or not {"seeds", "select", "budget"} <= set(tune):
            _fail(path, f"must be a mapping with seeds:, select:, budget: and space:, got keys {sorted(tune or {})}")
        seeds, budget, space = tune["seeds"], tune["budget"], tune.get("space") or {}
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) \
                or len(set(seeds)) < len(seeds):
            _fail(path, f"seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
        self.eval_seeds = list(grid.get("seed", [base.get("seed", defaults()["seed"])]))
        both = sorted(set(seeds) & set(self.eval_seeds))
        if both:
            _fail(path, f"tuning seeds {both} are also evaluation seeds (grid: seed {self.eval_seeds}): "
                        "use disjoint seeds")
        try:
            selection.check_metric(str(tune["select"]))
        except selection.SelectionError as err:
            _fail(path, str(err))
        value = lambda key: base.get(key, grid.get(key, [defaults()[key]])[0] if key in grid else defaults()[key])  # noqa: E731
        needs = (("fraction-evaluate", "local-val-fraction") if tune["select"] == "personalized-val-accuracy"
                 else ("val-fraction",))
        if any(not value(k) for k in needs):
            _fail(path, f"select '{tune['select']}' needs {' and '.join(f'{k} > 0' for k in needs)} (no such "
                        "validation data is set)")
        if isinstance(budget, dict):
            if len(set(budget.values())) > 1:
                _fail(path, f"unequal budgets {budget}: give one number, the same for every method")
            budget = next(iter(budget.values()), None)
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            _fail(path, f"budget must be an integer >= 1 (trials per method and setting), got {budget!r}")
        self.methods = [str(m) for m in grid.get("method", [base.get("method", defaults()["method"])])]
        if not isinstance(space, dict):
            _fail(path, f"space must map method -> {{key: candidates}}, got {space!r}")
        known = set(defaults())
        for method, keys in space.items():
            if method not in self.methods:
                _fail(path, f"space names method '{method}', which grid: method does not list ({self.methods})")
            if not isinstance(keys, dict) or not keys:
                _fail(path, f"space: {method} must be a mapping of key -> candidates, got {keys!r}")
            for key, spec in keys.items():
                if key not in known or key in NOT_SEARCHED:
                    _fail(path, f"space: {method}: unknown key '{key}' under search: use run-config keys "
                                "(docs/config.md), not seed/method/out-dir")
                if not uses(method, key):
                    _fail(path, f"space: {method}: '{key}' is {owner(key)}'s key, which {method} does not read")
                instead = replaced(method).get(key)
                if instead:
                    _fail(path, f"space: {method}: {method} trains with '{instead}' instead of '{key}': "
                                f"search '{instead}'")
                if key in grid or key in own.get(method, {}):
                    _fail(path, f"space: {method}: '{key}' is also in grid:/methods:: set each key in one place")
                _check_space(path, method, key, spec)
        self.grid = {k: v for k, v in grid.items() if k != "seed"}
        follow = self._check_follow(path, tune.get("follow") or {}, space)
        self.tune = {"seeds": seeds, "select": str(tune["select"]), "budget": budget, "space": space,
                     **({"follow": follow} if follow else {})}
        self.lock, self.slots = threading.Lock(), None  # Optuna's calls, one at a time (search)

    def _check_follow(self, path: Path, follow, space: dict) -> dict[str, str]:
        """``follow:`` maps a method to the searched method whose choice it takes."""
        if not isinstance(follow, dict):
            _fail(path, f"follow must map method -> the searched method whose choice it takes, got {follow!r}")
        for method, leader in follow.items():
            where = f"follow: {method}: {leader}"
            if method not in self.methods or leader not in self.methods:
                _fail(path, f"{where}: both must be in grid: method ({self.methods})")
            if method in space:
                _fail(path, f"{where}: {method} has a space of its own: search it or follow, not both")
            if leader not in space:  # a leader that follows has no space (its own entry refuses one)
                _fail(path, f"{where}: {leader} has no space to choose from: follow a searched method")
            if self.own.get(method) or self.own.get(leader):
                _fail(path, f"{where}: a methods: block for either would leave the choice to take ambiguous")
        return {str(m): str(l) for m, l in follow.items()}

    def taken(self, method: str) -> list[str]:
        """The keys a follower takes from its leader's choice: those of the leader's space it reads."""
        return [k for k in self.tune["space"][self.tune["follow"][method]] if uses(method, k)]

    # ---- runs ---------------------------------------------------------------------
    @property
    def settings(self) -> list[dict]:
        """Every combination of the grid's keys but seed (with the methods: block's keys)."""
        return self.points(self.grid, self.own)

    @property
    def setting_keys(self) -> list[str]:
        """The run-config keys that tell settings apart (federation keys are not in the rows;
        a methods: block's single value is part of its method's setting, not another key)."""
        keys = [*self.grid, *(k for m, keys in self.own.items() for k in keys if k not in fixed_keys(self.own, m)),
                "method"]
        return [k for k in dict.fromkeys(keys) if k in defaults()]

    def runs(self, setting: dict, params: dict, seeds: Iterable[int], out: Path | None = None) -> list:
        """(cfg, fed, name) of ``setting`` with ``params`` on each seed; with ``out``, a run
        folder that already holds part of a run is resumed (checkpoint) or replaced."""
        made = []
        for seed in seeds:
            fixed = fixed_keys(self.own, setting.get("method"))
            base = {**self.base, **{k: setting[k] for k in fixed}, **params}
            grid = {**{k: [v] for k, v in setting.items() if k not in fixed}, **{k: [v] for k, v in params.items()},
                    "seed": [seed]}
            flag = {"resume": True}  # folders are checked below, not by expand
            (cfg, fed, name), = self.expand({**base, **flag}, grid, {})
            cfg["resume"] = False
            if out is not None and (out / name).exists():
                cfg["resume"] = (out / name / "checkpoint.pt").exists()
                cfg["overwrite"] = not cfg["resume"]
            made.append((cfg, fed, name))
        return made

    def check(self) -> list:
        """Runs that stand for the search in ``--check``: every candidate value checked as a
        run config, and one run per setting and tuning seed for the data check."""
        for setting in self.settings:
            for key, spec in self.tune["space"].get(setting["method"], {}).items():
                for value in (spec if isinstance(spec, list) else [spec["low"], spec["high"]]):
                    self.runs(setting, {key: value}, self.tune["seeds"][:1])
        return [r for s in self.settings for r in self.runs(s, {}, [*self.tune["seeds"], *self.eval_seeds])]

    # ---- the search ---------------------------------------------------------------
    def study(self, out: Path, setting: dict):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = self.tune["space"].get(setting["method"], {})
        seed = int(self.tune["seeds"][0])
        if grid_only(space):
            class Grid(optuna.samplers.GridSampler):
                def after_trial(self, *args) -> None:
                    """No ``study.stop()`` when the grid is done: it works only inside
                    ``study.optimize``; here the budget (``cap``) ends the search."""

            sampler = Grid(space, seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
        name = "_".join(f"{k}-{_fmt(v)}" for k, v in setting.items())
        return optuna.create_study(study_name=name, storage=f"sqlite:///{out / 'tune.db'}", sampler=sampler,
                                   direction="maximize" if selection.VALIDATION_METRICS[self.tune["select"]]
                                   else "minimize", load_if_exists=True)

    def cap(self, setting: dict) -> int:
        """Trials for this setting: the budget, or every candidate when fewer."""
        space = self.tune["space"].get(setting["method"], {})
        if not space:
            return 0
        if grid_only(space):
            return min(self.tune["budget"], math.prod(len(s) for s in space.values()))
        return self.tune["budget"]

    def trial_frame(self, out: Path, names: list[str]) -> pd.DataFrame:
        frames = [pd.read_csv(out / n / "metrics.csv") for n in names if (out / n / "metrics.csv").exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def search(self, out: Path, setting: dict, run_all: Callable) -> list[str]:
        """Run this setting's study to its budget; returns every tuning run's name. Settings
        may be searched at once, each in a thread (``run``); every Optuna call then holds
        ``self.lock`` while the runs go on without it: the studies share one SQLite file,
        which takes one writer at a time (Optuna's storage for parallel workers, a journal
        file, would change tune.db, which an out-dir keeps to resume), and the calls take
        milliseconds next to a run."""
        from optuna.trial import TrialState

        space = self.tune["space"][setting["method"]]
        dists = {k: _distribution(k, s) for k, s in space.items()}
        with self.lock:
            study = self.study(out, setting)
            draws = ([] if grid_only(space) else  # TPE's start-up trials, the same in every method's study
                     shared_draws(space, min(self.cap(setting), TPE_STARTUP), int(self.tune["seeds"][0])))
            if not study.get_trials(deepcopy=False):  # a new study
                for params in draws:
                    study.enqueue_trial(params)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # cut off by an interruption
                study.enqueue_trial(t.params, skip_if_exists=False)
                study.tell(t.number, state=TrialState.FAIL)
        counted = lambda: [t for t in study.get_trials(deepcopy=False)  # noqa: E731
                           if t.state == TrialState.COMPLETE or "failed-runs" in t.user_attrs]
        while True:
            with self.lock:
                if len(counted()) >= self.cap(setting):
                    break
                if self.slots is not None and self.slots.stopped.is_set():
                    raise parallel.Stopped  # ask no trial that would only be cut off
                trial = study.ask(dists)
                runs = self.runs(setting, trial.params, self.tune["seeds"], out)
                names = [name for _, _, name in runs]
                trial.set_user_attr("runs", names)
            todo = [r for r in runs if not run_done(out / r[2])]
            failed = [name for name, status, *_ in (run_all(todo) if todo else []) if status != "finished:completed"]
            frame, value = self.trial_frame(out, names), math.nan
            if not failed and not frame.empty and self.tune["select"] in frame:
                frame = with_columns(frame, trial=trial.number, phase="tune")
                scores = selection.config_scores(frame, self.tune["select"], [], list(space))
                value = float(scores[f"{self.tune['select']}-mean"].iloc[0]) if len(scores) else math.nan
                failed = [] if not math.isnan(value) else ["no finite selection metric"]
            else:
                failed = failed or names
            with self.lock:
                if failed:
                    trial.set_user_attr("failed-runs", failed)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
        with self.lock:
            self.trials.update({n: t.number for t in study.get_trials(deepcopy=False)
                                if t.state in (TrialState.COMPLETE, TrialState.FAIL)
                                for n in t.user_attrs.get("runs", [])})
            if draws:  # how many of the shared draws this study ran (a study begun before them: 0)
                tried = [t.params for t in counted()]
                self.shared[study.study_name] = sum(d in tried for d in draws)
            return sorted({n for t in counted() for n in t.user_attrs.get("runs", [])})

    def run(self, out: Path, run_all: Callable, slots: parallel.Slots | None = None) -> tuple[list[Path], list[str]]:
        """Both phases: the search per setting (one after another; with ``slots``, up to
        ``--jobs`` settings at once, their runs sharing the slots), then the chosen
        configurations on the evaluation seeds. Returns the run folders (tuning, then
        evaluation) and the failed evaluation runs' names. ``run_all(runs)`` yields (name,
        status, details, seconds). Each setting's study asks, runs and tells in its own
        order whatever the other settings do, so ``--jobs`` changes no choice and no number."""
        self.trials: dict[str, int] = {}
        self.shared: dict[str, int] = {}
        self.slots = slots
        spec = {**self.tune, "settings": self.setting_keys, "evaluation-seeds": self.eval_seeds}
        if "follow" in self.tune:  # the keys each follower takes, for the selection (simulations/selection.py)
            spec["follow-keys"] = {m: self.taken(m) for m in self.tune["follow"]}
        (out / selection.SPEC).write_text(json.dumps(spec, indent=2))
        settings = [s for s in self.settings if self.cap(s)]
        search = lambda setting: self.search(out, setting, run_all)  # noqa: E731
        found = parallel.concurrently(search, settings, slots) if slots is not None else map(search, settings)
        tuned = [n for names in found for n in names]
        if self.shared:  # per TPE study, its trials that were the shared draws (the report says so)
            spec["shared-draws"] = dict(sorted(self.shared.items()))
            (out / selection.SPEC).write_text(json.dumps(spec, indent=2))
        rows = self.trial_frame(out, tuned)
        if not rows.empty:
            rows = with_columns(rows, phase="tune", trial=rows["run-name"].map(self.trials))
        else:
            rows = pd.DataFrame(columns=["phase", "run-name", "round", *self.setting_keys])
        evaluation = []
        for setting in self.settings:
            leader = self.tune.get("follow", {}).get(setting["method"])
            params = (self.chosen(rows, setting) if leader is None else  # the leader's choice in this setting
                      {k: v for k, v in self.chosen(rows, {**setting, "method": leader}).items()
                       if k in self.taken(setting["method"])})
            evaluation += self.runs(setting, params, self.eval_seeds, out)
        # seed by seed (every setting's seed 0 first): a sweep stopped midway leaves whole
        # seeds, paired across methods, not some methods' every seed and none of others'
        evaluation.sort(key=lambda r: self.eval_seeds.index(r[0]["seed"]))
        todo = [r for r in evaluation if not run_done(out / r[2])]
        failed = [name for name, status, *_ in (run_all(todo) if todo else []) if status != "finished:completed"]
        return [out / n for n in tuned] + [out / name for _, _, name in evaluation], failed

    def chosen(self, rows: pd.DataFrame, setting: dict) -> dict:
        """The searched keys' values that ``selection.select`` chooses for ``setting``."""
        keys = list(self.tune["space"].get(setting["method"], {}))
        if not keys or rows.empty:
            return {}
        part = rows.copy()
        for k in self.setting_keys:
            if k in setting:  # another method's methods: block key is not this setting's
                part = part[part[k].astype(str) == str(setting[k])]
        picked = selection.select(part, self.tune["select"], self.setting_keys, {setting["method"]: keys})
        if picked.empty or picked[keys].isna().any(axis=None):
            raise TuneError(f"{setting}: no trial gave a finite {self.tune['select']}: see the tuning runs' flwr.log")
        return {k: _plain(picked[k].iloc[0]) for k in keys}

    def label(self, frame: pd.DataFrame, out: Path) -> pd.DataFrame:
        """``results.csv`` with its ``phase`` (tune/eval) and ``trial`` columns."""
        if frame.empty:
            return frame
        names = frame["run-name"].astype(str)
        frame = with_columns(frame, phase=["tune" if n in self.trials else "eval" for n in names],
                              trial=names.map(self.trials), first=True)
        frame.to_csv(out / "results.csv", index=False)
        return frame


def with_columns(frame: pd.DataFrame, first: bool = False, **columns) -> pd.DataFrame:
    """``frame`` with ``columns`` added in one concat (first or last): the metrics frame is
    wide and made of many blocks, where inserting columns one by one fragments it."""
    extra = pd.DataFrame(columns, index=frame.index)
    return pd.concat([extra, frame] if first else [frame, extra], axis=1)


def _plain(value):
    """A pandas/NumPy scalar as the Python value a run config takes."""
    return value.item() if hasattr(value, "item") else value


def load(path: Path, base: dict, grid: dict, own: dict, expand: Callable, points: Callable) -> Search | None:
    """The sweep file's search, checked (None without a ``tune:`` block)."""
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict) or "tune" not in spec:
        return None
    return Search(path, spec["tune"], base, grid, own, expand, points)
