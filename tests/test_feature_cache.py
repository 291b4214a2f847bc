"""The on-disk feature cache (``feature-cache``, models/feature_store.py): a second process
reads what the first computed, bit for bit; a bad file is ignored with one warning; off by
default, it writes nothing. A tiny random timm backbone keeps each test to seconds."""

import logging
import threading
from pathlib import Path

import pytest
import torch

from common.keys import ConfigError
from models import features
from models.feature_store import FeatureStore
from models.features import FeatureExtractor
from simulations.config import resolve

MEAN, STD = (0.5,), (0.25,)


def tiny() -> FeatureExtractor:
    """A fresh extractor: what another process would build (an empty memory cache)."""
    return FeatureExtractor("test_efficientnet", pretrained=False, size=32, seed=3)


def images(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def cache_dir(tmp_path):
    features.use_disk_cache(tmp_path / "feature-cache")
    yield tmp_path / "feature-cache"
    features.use_disk_cache(None)


def shards(folder):
    return sorted(folder.rglob("*.safetensors"))


def test_a_second_extractor_reads_the_features_bit_for_bit(cache_dir):
    x = images()
    first = tiny()
    X1 = first(x, MEAN, STD)
    assert not shards(cache_dir)  # written on flush (after a client's message, at a run's end)
    features.flush()
    assert len(shards(cache_dir)) == 1 and first.unsaved == {}
    second = tiny()  # another process: nothing in memory
    X2 = second(x, MEAN, STD)
    assert second.computed == 0 and X2.dtype == torch.float32
    assert torch.equal(X2, X1)
    features.use_disk_cache(None)
    fresh = tiny()
    assert torch.equal(fresh(x, MEAN, STD), X1) and fresh.computed == len(x)  # the same numbers computed again
    features.use_disk_cache(cache_dir)
    # a batch half on disk: only the new half is computed, and written as a shard of its own
    both = torch.cat([x[:6], images(4, seed=1)])
    third = tiny()
    out = third(both, MEAN, STD)
    assert third.computed == 4 and torch.equal(out[:6], X1[:6])
    third.flush()
    assert len(shards(cache_dir)) == 2
    assert tiny()(both, MEAN, STD).equal(out)
    # another normalization of the same pixels is another sample
    other = tiny()
    other(x, (0.0,), (1.0,))
    assert other.computed == len(x)


def test_another_backbone_gets_its_own_store(cache_dir):
    x = images(4)
    tiny()(x, MEAN, STD)
    features.flush()
    seeded = FeatureExtractor("test_efficientnet", pretrained=False, size=32, seed=4)  # other random weights
    seeded(x, MEAN, STD)
    assert seeded.computed == 4  # never the other weights' features
    features.flush()
    assert len({p.parent for p in shards(cache_dir)}) == 2


@pytest.mark.parametrize("bad", ["garbage", "width", "dtype", "lengths", "names", "nan"])
def test_a_bad_file_is_ignored_with_one_warning(cache_dir, bad, caplog):
    from safetensors.torch import save_file

    x = images(5)
    first = tiny()
    X = first(x, MEAN, STD)
    first.flush()
    good, = shards(cache_dir)
    keys = torch.frombuffer(bytearray(b"".join(first.cache)), dtype=torch.uint8).view(-1, 16).clone()
    tensors = {"garbage": None,
               "width": {"keys": keys, "features": torch.zeros(5, first.dim + 1)},
               "dtype": {"keys": keys, "features": torch.zeros(5, first.dim, dtype=torch.float64)},
               "lengths": {"keys": keys[:4], "features": torch.zeros(5, first.dim)},
               "names": {"keys": keys, "features": torch.zeros(5, first.dim), "code": torch.zeros(1)},
               "nan": {"keys": keys, "features": torch.full((5, first.dim), float("nan"))}}[bad]
    good.unlink()  # only the bad file claims these samples
    path = good.parent / "bad.safetensors"
    if tensors is None:
        path.write_bytes(b"\x80\x04not a safetensors file")
    else:
        save_file(tensors, str(path))
    second = tiny()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        out = second(x, MEAN, STD)
        second(images(3, seed=2), MEAN, STD)  # a second miss reads the folder again, warns no more
    assert torch.equal(out, X) and second.computed == 5 + 3
    lines = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert len(lines) == 1 and "bad.safetensors" in lines[0] and "\n" not in lines[0]


def test_writers_at_once_lose_nothing_and_merge(tmp_path, monkeypatch):
    """Two writers (threads here, processes in a sweep) add shards at once; past
    ``MAX_SHARDS`` one merges them under the lock; a fresh reader finds every entry."""
    monkeypatch.setattr(FeatureStore, "MAX_SHARDS", 3)
    folder = tmp_path / "store"
    written, stores = {}, []

    def writer(w: int):
        store = FeatureStore(folder, 4)
        stores.append(store)
        for i in range(10):
            entries = {bytes([w, i]) * 8: torch.full((4,), float(w * 100 + i))}
            written.update(entries)
            store.write(entries)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in [FeatureStore(folder, 4), *stores]:  # a fresh reader; writers whose shards were merged away
        got = store.get(list(written))
        assert set(got) == set(written) and all(torch.equal(got[k], v) for k, v in written.items())
    assert len(shards(folder)) <= 2 * FeatureStore.MAX_SHARDS  # merged, not 20 files
    assert not list(folder.glob("*.tmp"))


def test_an_atomic_write_gets_a_plain_files_mode_not_mkstemps(tmp_path):
    """Others sharing an out-dir can read kept features and models: 0666 less the umask."""
    import os
    import stat

    from models.feature_store import save_atomic

    old = os.umask(0o027)
    try:
        save_atomic({"w": torch.ones(2)}, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temp file left


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_the_umask_is_read_without_setting_it(monkeypatch):
    """Setting the umask to read it would give another thread's new file a wrong mode."""
    import os

    from models.feature_store import current_umask

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("the umask was set to read it"))
        assert current_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_off_by_default_writes_nothing(tmp_path):
    cfg = resolve({})
    assert cfg["feature-cache"] == ""
    from common.outputs import feature_cache_dir

    assert feature_cache_dir(cfg) is None
    features.use_disk_cache(feature_cache_dir(cfg))
    fe = tiny()
    fe(images(3), MEAN, STD)
    features.flush()
    assert fe.store is None and fe.unsaved == {}
    assert feature_cache_dir(resolve({"out-dir": str(tmp_path), "feature-cache": "fc"})) == tmp_path / "fc"


@pytest.mark.parametrize("value", ["../elsewhere", "/tmp/x", "a/b", ".."])
def test_the_cache_folder_stays_under_out_dir(value):
    with pytest.raises(ConfigError, match="feature-cache must be a plain folder name"):
        resolve({"feature-cache": value})


def test_a_sweeps_fedhip_runs_share_features_across_processes(tmp_path, monkeypatch):
    """End to end: a sweep's runs write ``<out-dir>/feature-cache`` by default; a run in a
    new process (memory caches cleared) extracts nothing; the numbers are the same."""
    from clients import fedhip
    from models.features import extractor, feature_key
    from tests.conftest import run_sweep

    base = {"dataset": "digits", "method": "fedhip", "num-supernodes": 2, "backbone": "test_efficientnet",
            "pretrained": False, "backbone-size": 16, "partitioner": "iid", "fedhip-alpha": 1.0}

    def fresh_process():
        extractor.cache_clear()
        fedhip._FEATURES.clear()

    images_computed = []
    compute = FeatureExtractor.compute
    monkeypatch.setattr(FeatureExtractor, "compute",
                        lambda self, x, *norm: images_computed.append(len(x)) or compute(self, x, *norm))

    def computed() -> int:  # by every extractor of this process
        return sum(images_computed)

    fresh_process()
    before = computed()
    code, first, out = run_sweep(tmp_path, base, {"seed": [0]}, "--local")
    assert code == 0 and shards(out / "feature-cache") and computed() > before
    fresh_process()
    before = computed()
    (tmp_path / "sweep.yaml").unlink()
    code, again, _ = run_sweep(tmp_path, base, {"seed": [0], "ridge-gamma": [100.0]}, "--local")
    assert code == 0 and computed() == before  # every feature read from the disk cache
    fedhip_keys = {k: v for k, v in base.items() if k != "num-supernodes"}
    assert extractor(feature_key(resolve(fedhip_keys)), "cpu").store is not None
    cols = ["accuracy", "personalized-accuracy"]
    assert first[cols].iloc[-1].tolist() == again[cols].iloc[-1].tolist()


def test_where_features_were_cached_splits_no_group_in_the_report():
    """Runs of a sweep resumed across the change (no feature-cache, then the sweep's
    default) are one setting: the folder changes no number."""
    import pandas as pd

    from simulations.report import group_keys

    frame = pd.DataFrame({"run-name": ["a", "b"], "method": ["fedhip"] * 2, "seed": [0, 1],
                          "feature-cache": [float("nan"), "feature-cache"], "ridge-gamma": [100.0] * 2})
    assert group_keys(frame, ["run-name", "method", "seed", "feature-cache", "ridge-gamma"]) == ["method"]
