"""The tuning protocol: a bad tune: block fails --check in one line; selection reads
validation metrics only and is a plain argmax over results.csv; a tiny tuned sweep runs
end to end in-process and resumes from its study."""

import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from simulations.selection import phases, select
from simulations.sweep import main
from simulations.tuning import shared_draws

BASE = {"dataset": "digits", "num-server-rounds": 1, "num-supernodes": 2, "local-epochs": 1}


def write(tmp_path, tune, grid=None, base=None):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": base or BASE, "grid": grid or {"method": ["fedavg", "fedprox"],
                                                                           "seed": [0, 1]}, "tune": tune}))
    return spec


TUNE = {"seeds": [100, 101], "select": "val-accuracy", "budget": 2, "space": {"fedavg": {"lr": [0.01, 0.1]}}}


@pytest.mark.parametrize("change, message", [
    ({"space": {"fedavg": {"learning-rate": [0.1]}}}, "unknown key 'learning-rate' under search"),
    ({"budget": {"fedavg": 4, "fedprox": 2}}, "unequal budgets"),
    ({"seeds": [1, 100]}, "tuning seeds [1] are also evaluation seeds"),
    ({"select": "accuracy"}, "select 'accuracy' is not a validation metric"),
    ({"select": "personalized-accuracy"}, "is not a validation metric"),
    ({"space": {"fedavg": {"proximal-mu": [0.1]}}}, "'proximal-mu' is fedprox's key, which fedavg does not read"),
    ({"space": {"fedhip": {"lr": [0.1]}}}, "space names method 'fedhip', which grid: method does not list"),
    ({"space": {"fedavg": {"lr": {"low": 0.1, "high": 0.01}}}}, "low < high"),
    ({"space": {"fedavg": {"lr": {"low": 0, "high": 0.1, "log": True}}}}, "log needs low > 0"),
    ({"space": {"fedavg": {"lr": [-0.1, 0.1]}}}, "lr must be > 0"),
    ({"budget": 0}, "budget must be an integer >= 1"),
    ({"extra": 1}, "must be a mapping with seeds:"),
    ({"follow": {"fedprox": "fedhip"}}, "follow: fedprox: fedhip: both must be in grid: method"),
    ({"follow": {"fedavg": "fedprox"}}, "fedavg has a space of its own: search it or follow"),
    ({"follow": {"fedprox": "fedprox"}, "space": {}}, "fedprox has no space to choose from"),
    ({"follow": ["fedprox"]}, "follow must map method -> the searched method"),
])
def test_bad_tune_blocks_fail_check_in_one_line(tmp_path, capsys, change, message):
    spec = write(tmp_path, {**TUNE, **change})
    t0 = time.perf_counter()
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "out").exists()


def test_searching_a_shared_key_the_method_replaces_fails_check(tmp_path, capsys):
    """FedDG-LSI trains with lsi-lr, not lr: a space over its lr would run identical trials."""
    grid = {"method": ["fedavg", "fedlsi"], "seed": [0, 1]}
    spec = write(tmp_path, {**TUNE, "space": {"fedlsi": {"lr": [0.001, 0.01]}}}, grid=grid)
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "fedlsi trains with 'lsi-lr' instead of 'lr': search 'lsi-lr'" in err and len(err.splitlines()) == 1
    spec = write(tmp_path, {**TUNE, "space": {"fedlsi": {"lsi-lr": [0.001, 0.01]}}}, grid=grid)
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 0


def test_selecting_on_validation_data_that_is_not_there_fails_check(tmp_path, capsys):
    spec = write(tmp_path, {**TUNE, "select": "personalized-val-accuracy"}, base={**BASE, "fraction-evaluate": 0.0})
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 2
    assert "needs fraction-evaluate > 0 and local-val-fraction > 0" in capsys.readouterr().err


def test_a_good_tune_block_passes_check(tmp_path, capsys):
    spec = write(tmp_path, {**TUNE, "space": {"fedavg": {"lr": [0.01, 0.1]},
                                              "fedprox": {"lr": {"low": 0.001, "high": 0.3, "log": True},
                                                          "proximal-mu": [0.01, 0.1]}}})
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 0
    assert "tuning 2 setting(s), budget 2 trial(s) x 2 tuning seed(s)" in capsys.readouterr().out


def test_a_methods_blocks_single_values_stay_out_of_tuning_run_names(tmp_path):
    """A methods: block's fixed settings go into the run's config, not its name (the
    leaderboard's GIFD names ran past the 128-character limit)."""
    from simulations import tuning
    from simulations.sweep import expand, load_sweep, points

    spec = tmp_path / "s.yaml"
    fixed = {"gan-dataset": "fashion-mnist-holdout", "gan-train-steps": 300, "attack-num-images": 1,
             "attack-budget": 20, "attack-restarts": 1}
    spec.write_text(yaml.safe_dump({"base": BASE, "grid": {"method": ["fedavg", "gifd"], "seed": [0]},
                                    "methods": {"gifd": fixed}, "tune": TUNE}))
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 0
    search = tuning.load(spec, *load_sweep(spec), expand, points)
    gifd = next(s for s in search.settings if s["method"] == "gifd")
    (cfg, _, name), = search.runs(gifd, {}, [100])
    assert name == "method-gifd_seed-100" and cfg["attack-budget"] == 20 and cfg["gan-train-steps"] == 300


# ---- selection --------------------------------------------------------------------------
def synthetic(seed: int = 0) -> pd.DataFrame:
    """results.csv of a tuned sweep: 2 methods x 2 alphas; fedavg tries 3 lr values, fedprox
    2 (lr, mu) pairs, on tuning seeds 100/101 (2 rounds each); then evaluation rows."""
    rng = np.random.default_rng(seed)
    rows, trial = [], 0
    configs = {"fedavg": [{"lr": v, "proximal-mu": 0.0} for v in (0.01, 0.1, 0.3)],
               "fedprox": [{"lr": 0.05, "proximal-mu": 0.01}, {"lr": 0.2, "proximal-mu": 0.1}]}
    for alpha in (0.1, 0.5):
        for method, tries in configs.items():
            for params in tries:
                for s in (100, 101):
                    name = f"{method}-{alpha}-{params['lr']}-{s}"
                    for rnd in (1, 2):
                        rows.append({"phase": "tune", "trial": trial, "run-name": name, "round": rnd,
                                     "num-server-rounds": 2, "method": method, "seed": s, "dirichlet-alpha": alpha,
                                     **params, "val-accuracy": rng.random(), "val-loss": rng.random() * 3})
                trial += 1
            for s in (0, 1):
                rows.append({"phase": "eval", "run-name": f"{method}-{alpha}-{s}", "round": 2, "num-server-rounds": 2,
                             "method": method, "seed": s, "dirichlet-alpha": alpha, **tries[0],
                             "val-accuracy": rng.random(), "val-loss": rng.random()})
    frame = pd.DataFrame(rows)
    for test in ("accuracy", "loss", "personalized-accuracy", "heldout-accuracy"):
        frame[test] = rng.random(len(frame))
    return frame


SETTINGS = ["method", "dirichlet-alpha"]
SEARCHED = {"fedavg": ["lr"], "fedprox": ["lr", "proximal-mu"]}


@pytest.mark.parametrize("metric", ["val-accuracy", "val-loss"])
def test_selection_never_reads_a_test_column(metric):
    frame = synthetic()
    chosen = select(frame, metric, SETTINGS, SEARCHED)
    poisoned = frame.copy()
    for test in ("accuracy", "loss", "personalized-accuracy", "heldout-accuracy"):
        poisoned[test] = np.where(np.arange(len(frame)) % 2, 1e9, -1e9)  # would flip any choice that read it
    pd.testing.assert_frame_equal(select(poisoned, metric, SETTINGS, SEARCHED), chosen)
    gone = frame.drop(columns=["accuracy", "loss", "personalized-accuracy", "heldout-accuracy"])
    pd.testing.assert_frame_equal(select(gone, metric, SETTINGS, SEARCHED), chosen)


@pytest.mark.parametrize("metric, higher", [("val-accuracy", True), ("val-loss", False)])
def test_selection_is_the_argmax_of_the_final_rounds_mean(metric, higher):
    frame = synthetic(1)
    chosen = select(frame, metric, SETTINGS, SEARCHED).set_index(SETTINGS)
    tune = frame[(frame["phase"] == "tune") & (frame["round"] == 2)]
    for (method, alpha), part in tune.groupby(SETTINGS):
        means = part.groupby(SEARCHED[method])[metric].mean()
        best = means.idxmax() if higher else means.idxmin()
        best = best if isinstance(best, tuple) else (best,)
        got = chosen.loc[(method, alpha)]
        assert tuple(got[SEARCHED[method]]) == best
        assert got[f"{metric}-mean"] == pytest.approx(means.max() if higher else means.min())
        assert got["trials"] == len(means)


def test_a_test_metric_cannot_be_selected_on():
    from simulations.selection import SelectionError

    with pytest.raises(SelectionError, match="'accuracy' is not a validation metric"):
        select(synthetic(), "accuracy", SETTINGS, SEARCHED)


# ---- end to end --------------------------------------------------------------------------
def test_tiny_tuned_sweep_end_to_end_and_resume(tmp_path, capsys):
    """digits, 1 round, 2 clients: fedavg searches lr (2 trials x 1 tuning seed), fedprox runs
    its defaults; then both on the evaluation seed; a second call reuses every run."""
    from simulations.report import main as report_main

    tune = {"seeds": [100], "select": "val-accuracy", "budget": 2, "space": {"fedavg": {"lr": [0.05, 0.3]}}}
    spec = write(tmp_path, tune, grid={"method": ["fedavg", "fedprox"], "seed": [0]})
    spec.write_text(spec.read_text() + "methods:\n  fedprox: {proximal-mu: 0.05}\n")  # one method's own setting
    out = tmp_path / "out"
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert {"val-accuracy", "val-loss", "personalized-val-accuracy", "accuracy"} <= set(results.columns)
    runs = results.drop_duplicates("run-name")
    tuned = runs[runs["phase"] == "tune"]
    assert sorted(tuned["lr"]) == [0.05, 0.3] and set(tuned["seed"]) == {100} and set(tuned["method"]) == {"fedavg"}
    assert sorted(tuned["trial"]) == [0, 1]
    evaluated = runs[runs["phase"] == "eval"]
    assert sorted(evaluated["method"]) == ["fedavg", "fedprox"] and set(evaluated["seed"]) == {0}
    assert evaluated.set_index("method").loc["fedprox", "proximal-mu"] == 0.05
    # selected.csv = the argmax by hand over results.csv's tuning rows (final round)
    final = results[(results["phase"] == "tune") & (results["round"] == 1)]
    by_hand = final.groupby("lr")["val-accuracy"].mean()
    selected = pd.read_csv(out / "selected.csv").set_index("method")
    assert "proximal-mu" not in selected.columns  # fedprox's fixed value is not a setting of every method
    assert selected.loc["fedavg", "lr"] == by_hand.idxmax()
    assert selected.loc["fedavg", "val-accuracy-mean"] == pytest.approx(by_hand.max())
    assert selected.loc["fedavg", "trials"] == 2 and selected.loc["fedprox", "trials"] == 0
    assert evaluated.set_index("method").loc["fedavg", "lr"] == by_hand.idxmax()
    assert (out / "tune.db").exists() and "## Tuning protocol" in (out / "report.md").read_text()
    # an interrupted or repeated sweep resumes from tune.db and the finished runs: nothing reruns
    capsys.readouterr()
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 0
    assert "finished:completed in" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "selected.csv").set_index("method"), selected)
    assert report_main([str(out), "--select", "val-loss"]) == 0  # another choice: said where it was not run
    assert report_main([str(out), "--select", "accuracy"]) == 2


def test_a_follower_runs_at_its_leaders_choice_of_the_keys_it_reads(tmp_path, capsys):
    """An ablation is not searched: fedavg follows fedprox, so its evaluation run takes
    fedprox's chosen lr, not proximal-mu (a key fedavg does not read), and no tuning run."""
    tune = {"seeds": [100], "select": "val-accuracy", "budget": 2, "follow": {"fedavg": "fedprox"},
            "space": {"fedprox": {"lr": [0.05, 0.3], "proximal-mu": [0.5]}}}
    spec = write(tmp_path, tune, grid={"method": ["fedprox", "fedavg"], "seed": [0]})
    out = tmp_path / "out"
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 0
    assert "tuning 1 setting(s) (1 more untuned: defaults or a followed choice)" in capsys.readouterr().out
    runs = pd.read_csv(out / "results.csv").drop_duplicates("run-name").set_index("run-name")
    assert set(runs.loc[runs["phase"] == "tune", "method"]) == {"fedprox"}
    evaluated = runs[runs["phase"] == "eval"].set_index("method")
    selected = pd.read_csv(out / "selected.csv").set_index("method")
    assert evaluated.loc["fedavg", "lr"] == evaluated.loc["fedprox", "lr"] == selected.loc["fedprox", "lr"]
    assert evaluated.loc["fedprox", "proximal-mu"] == 0.5 and evaluated.loc["fedavg", "proximal-mu"] != 0.5
    assert selected.loc["fedavg", "lr"] == selected.loc["fedprox", "lr"] and selected.loc["fedavg", "trials"] == 0
    assert pd.isna(selected.loc["fedavg", "proximal-mu"])
    assert "fedavg took fedprox's choice of `lr`" in (out / "report.md").read_text()


def test_long_run_names_are_cut_with_a_stable_hash():
    """Searched floats make long names; a run folder name stays within 128 characters, unique
    and the same on every call (resume finds its folders)."""
    from simulations.sweep import expand

    grid = {"method": ["fedavg"], "lr": [0.017798814254422757, 0.027798814254422757],
            "weight-decay": [1.2986064044061857e-05], "momentum": [0.7063747742309211],
            "val-fraction": [0.012345678901234567], "local-val-fraction": [0.09876543210987654],
            "local-epochs": [1], "seed": [100]}
    assert len("_".join(f"{k}-{v[0]}" for k, v in grid.items())) > 128
    names = [name for _, _, name in expand({"dataset": "digits"}, grid, {})]
    assert all(len(n) <= 128 for n in names) and len(set(names)) == 2
    assert names == [name for _, _, name in expand({"dataset": "digits"}, grid, {})]


# ---- --jobs: the settings' searches at once ------------------------------------------------
def test_shared_draws_give_shared_keys_the_same_values_and_cover_each_range():
    """Common random numbers: a key searched by two methods gets the same value in each
    trial whatever else either space holds; each range is a Latin hypercube (one value per
    stratum, log-scaled where asked); candidates come in equal shares; other seeds differ."""
    base = {"lr": {"low": 0.001, "high": 0.2, "log": True}, "batch-size": [32, 128],
            "weight-decay": {"low": 0.0, "high": 0.01}}
    wider = {"sdwc-beta": {"low": 1e-7, "high": 1e-3, "log": True}, **base, "local-epochs": {"low": 1, "high": 4}}
    a, b = shared_draws(base, 4, 100), shared_draws(wider, 4, 100)
    assert [{k: t[k] for k in base} for t in b] == a
    strata = lambda values, lo, hi, f: sorted(int((f(v) - f(lo)) / (f(hi) - f(lo)) * 4) for v in values)  # noqa: E731
    assert strata([t["lr"] for t in a], 0.001, 0.2, np.log) == [0, 1, 2, 3]
    assert strata([t["weight-decay"] for t in a], 0.0, 0.01, float) == [0, 1, 2, 3]
    assert sorted(t["batch-size"] for t in a) == [32, 32, 128, 128]
    assert sorted(t["local-epochs"] for t in b) == [1, 2, 3, 4] and all(type(t["local-epochs"]) is int for t in b)
    assert shared_draws(base, 4, 101) != a and shared_draws(base, 4, 100) == a


def trials(out) -> dict:
    """Every study in tune.db: its trials in order, as (number, state, params, value)."""
    import optuna

    storage = f"sqlite:///{out / 'tune.db'}"
    return {s.study_name: [(t.number, t.state.name, t.params, t.value)
                           for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
            for s in optuna.get_all_study_summaries(storage)}


def test_jobs_search_settings_at_once_with_the_same_choices_and_numbers(tmp_path, monkeypatch):
    """fedavg (grid) and fedprox (TPE) each search 2 trials on 1 tuning seed: with --jobs 2
    their searches run at once (two settings' tuning runs in flight together, never more
    than 2 runs), and tune.db's trials in order, selected.csv and every number equal --jobs
    1's. The slots' runs go in this process, one at a time (a fresh process per run costs
    seconds; the searches still interleave), so the test takes what --jobs 1 takes."""
    import threading

    from simulations import parallel
    from simulations.local import run_logged

    tune = {"seeds": [100], "select": "val-accuracy", "budget": 2,
            "space": {"fedavg": {"lr": [0.05, 0.3]}, "fedprox": {"lr": {"low": 0.01, "high": 0.3, "log": True}}}}
    spec = write(tmp_path, tune, grid={"method": ["fedavg", "fedprox"], "seed": [0]})
    flight, peaks, lock, one_run = set(), [], threading.Lock(), threading.Lock()

    def in_this_process(call):
        with lock:
            flight.add(call[0]["run-name"])
            peaks.append(set(flight))
        try:
            with one_run:  # a run's log handler is the process's: one run at a time here
                return run_logged(*call)
        finally:
            with lock:
                flight.discard(call[0]["run-name"])

    monkeypatch.setattr(parallel, "in_own_process", in_this_process)
    assert main([str(spec), "--local", "--out-dir", str(tmp_path / "one")]) == 0
    assert not peaks  # --jobs 1: no slots, one run after another as before
    assert main([str(spec), "--local", "--jobs", "2", "--out-dir", str(tmp_path / "two")]) == 0
    assert max(map(len, peaks)) == 2
    assert any({n.split("_")[0] for n in p} == {"method-fedavg", "method-fedprox"} and all("seed-100" in n for n in p)
               for p in peaks)  # the two settings' tuning runs at once
    one, two = trials(tmp_path / "one"), trials(tmp_path / "two")
    assert sorted(one) == ["method-fedavg", "method-fedprox"] and all(len(t) == 2 for t in one.values())
    # TPE's start-up trials are the shared draws (common random numbers), not its own
    assert [t[2] for t in one["method-fedprox"]] == shared_draws(tune["space"]["fedprox"], 2, 100)
    assert json.loads((tmp_path / "one" / "tune.json").read_text())["shared-draws"] == {"method-fedprox": 2}
    assert "2 trial(s) were common random numbers" in (tmp_path / "one" / "report.md").read_text()
    assert one == two
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "selected.csv"),
                                  pd.read_csv(tmp_path / "one" / "selected.csv"))
    pd.testing.assert_frame_equal(numbers(tmp_path / "two"), numbers(tmp_path / "one"))


def numbers(out) -> pd.DataFrame:
    """results.csv's rows by run name, without timings."""
    frame = pd.read_csv(out / "results.csv").sort_values(["run-name", "round"]).reset_index(drop=True)
    return frame[["run-name", *(c for c in frame.select_dtypes("number") if not c.endswith("seconds"))]]


def test_stopping_ends_every_settings_runs_within_seconds_and_records_nothing():
    """SIGTERM (as the sweep takes it: a KeyboardInterrupt) while three settings' searches
    share 2 slots: each run's process ends, no run is reported (one cut off must not count
    as a failed trial), and no queued run starts."""
    import signal
    import subprocess
    import sys
    import threading

    from simulations import parallel
    from simulations.superlink import stop_on_signals

    started, reported = [], []

    def work(call):  # a run: a process of its own, as in_own_process
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(proc)
        proc.wait()
        return "finished:completed", "", 1.0

    slots = parallel.Slots(2, work)
    search = lambda setting: reported.extend(slots.run([setting, setting]))  # noqa: E731
    before = signal.getsignal(signal.SIGTERM)
    stop_on_signals()
    try:
        threading.Timer(1.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGTERM)).start()
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt, match="stopped by signal"):
            parallel.concurrently(search, ["a", "b", "c"], slots)
        assert time.perf_counter() - t0 < 15
    finally:
        signal.signal(signal.SIGTERM, before)
    slots.close()
    assert len(started) == 2 and all(p.poll() is not None for p in started) and not reported


def test_phases_take_the_sweeps_label_then_tune_jsons_seeds(tmp_path):
    runs = pd.DataFrame({"run-name": ["a", "b", "c"], "seed": [100, 0, 1]})
    assert phases(tmp_path, runs) == ["eval"] * 3  # an untuned sweep: every run is compared
    (tmp_path / "tune.json").write_text(json.dumps({"seeds": [100]}))
    assert phases(tmp_path, runs) == ["tune", "eval", "eval"]  # no report yet: tune.json's seeds
    # the sweep's own label wins where results.csv has it (here it disagrees with the seeds)
    pd.DataFrame({"run-name": ["a", "a", "b", "c"], "phase": ["eval", "eval", "tune", "eval"]}).to_csv(
        tmp_path / "results.csv", index=False)
    assert phases(tmp_path, runs) == ["eval", "tune", "eval"]
    # a run the report does not list yet: the seeds again, for every run alike
    assert phases(tmp_path, pd.concat([runs, pd.DataFrame({"run-name": ["d"], "seed": [100]})]))[-1] == "tune"
