"""GIFD's attack round replayed in one process, without Flower's engine.

The same partitions, client batches, initial model and code (``GifdClient``,
``GifdStrategy.train_record``/``aggregate``, the ground-truth strip) as a Flower run with
the same seed, called directly, so that studies and benchmarks attack exactly what the
server would have received. An attack round R > 1 first runs rounds 1..R-1 as the run's
ordinary FedAvg rounds (every client, the strategy's own aggregation), so the attacked
model is a trained one.
"""

from __future__ import annotations

from types import SimpleNamespace

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict


def client_updates(cfg: dict, clients: int, server_round: int = 1):
    """(strategy, items) for the attack round: what the server received and the truth.

    ``server_round`` must be one of ``cfg["attack-round"]``; the rounds before it train."""
    from clients.gifd import GifdClient
    from datasets import load_for
    from simulations.client_app import PARTITION_KEYS, client_data
    from simulations.config import seed_everything
    from strategies.audit import strip_ground_truth
    from strategies.gifd import GifdStrategy, attack_rounds

    if server_round not in attack_rounds(cfg):
        raise ValueError(f"round {server_round} is not an attack round ({cfg['attack-round']}): pass "
                         f"attack-round={server_round}")
    seed_everything(int(cfg["seed"]))
    bundle = load_for(cfg)
    strategy = GifdStrategy(cfg, test_data=bundle)
    arrays = strategy.initial_arrays()
    key = tuple(cfg[k] for k in PARTITION_KEYS)
    nodes = [GifdClient(cfg, client_data(key, pid, clients)) for pid in range(clients)]
    for rnd in range(1, server_round):  # ordinary FedAvg rounds (the clients' local training)
        config = dict(strategy.train_record(rnd, arrays, ConfigRecord({"server-round": rnd}))["config"])
        replies = []
        for node in nodes:
            reply = node.train({"arrays": arrays.to_torch_state_dict()}, config, {})
            content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
            content["metrics"] = MetricRecord(reply.metrics)
            replies.append(SimpleNamespace(content=content))
        arrays, _ = strategy.aggregate(rnd, replies)
    record = strategy.train_record(server_round, arrays, ConfigRecord({"server-round": server_round}))
    config = dict(record["config"])
    items = []
    for pid, node in enumerate(nodes):
        reply = node.train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
        truth = strip_ground_truth(content)
        items.append((pid, content, truth))
    return strategy, items
