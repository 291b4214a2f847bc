"""GIFD's attack round replayed in one process, without Flower's engine.

The same partitions, client batches, initial model and code (``GifdClient``,
``GifdStrategy.train_record``, the ground-truth strip) as a Flower run with the same
seed, called directly, so that studies and benchmarks attack exactly what the server
would have received.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict


def client_updates(cfg: dict, clients: int, server_round: int = 1):
    """(strategy, items) for the attack round: what the server received and the truth."""
    from clients.gifd import GifdClient
    from datasets import load_for
    from simulations.client_app import PARTITION_KEYS, client_data
    from simulations.config import seed_everything
    from strategies.audit import strip_ground_truth
    from strategies.gifd import GifdStrategy

    seed_everything(int(cfg["seed"]))
    bundle = load_for(cfg)
    strategy = GifdStrategy(cfg, test_data=bundle)
    arrays = strategy.initial_arrays()
    record = strategy.train_record(server_round, arrays, ConfigRecord({"server-round": server_round}))
    config = dict(record["config"])
    key = tuple(cfg[k] for k in PARTITION_KEYS)
    items = []
    for pid in range(clients):
        client = GifdClient(cfg, client_data(key, pid, clients))
        reply = client.train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
        truth = strip_ground_truth(content)
        items.append((pid, content, truth))
    return strategy, items
