"""Which clients take part in a round, and which node serves each (``BaseStrategy``'s sampling).

The population is ``num-clients`` virtual clients, partition ids 0..P-1 (0 = one per
node). Each round, partition ids are drawn with ``random.Random(hash((seed, round,
salt)))`` from ``range(P)``. The node count plays no part, so the same seed trains the
same clients on 10 nodes or on 100. Flower's own sampling draws random node ids, which
differ between runs.

- ``partition-assignment=server`` (simulation, ``--local``): a node is a worker slot.
  The nodes are numbered 0..N-1 in node-id order, read once (no message). The k-th
  sampled client, in partition order, goes to node k mod N, so the load is even, and a
  node serves several clients per round when P > N. Each message names its client's
  partition, and replies are matched to clients by the message they answer, not by
  their node. Server memory grows with the clients sampled, not with the population.
- ``node`` (real SuperNodes, each with its own data): the population is the nodes.
  Each node is asked once for the ``partition-id`` of its node config (one QUERY), and
  a ``num-clients`` other than their count fails at start.
"""

from __future__ import annotations

import random
import time
from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from .replies import agree_partitions, check_query_reply

Pick = tuple[int, int]  # (partition id, node id)


def settled_node_ids(grid: Grid, settle: float = 0.2, timeout: float = 600.0) -> list[int]:
    """The grid's node ids once their number holds still for ``settle`` seconds: the
    simulation engine registers its nodes while the ServerApp starts (100,000 nodes
    take seconds), and a list read midway would change which node serves which client."""
    ids = list(grid.get_node_ids())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(settle)
        again = list(grid.get_node_ids())
        if again and len(again) == len(ids):
            return again
        ids = again
    return ids


class Sampling:
    """Mixin of ``BaseStrategy``: the population, seeded sampling, one message per
    sampled client, and the partition each reply belongs to."""

    cfg: dict
    max_examples: int

    def init_sampling(self) -> None:
        self.partitions: dict[int, int] = {}  # node: node id -> partition id, for nodes discovered
        self.node_ids: np.ndarray | None = None  # server: node ids in order, read once
        self.num_partitions = 0  # the population
        self.seen: set[int] = set()  # server: partitions sampled so far
        self.outbox: list[tuple[Message, int]] = []  # this phase's messages and their partitions
        self.by_message: dict[str, int] = {}  # message id -> partition, built when replies arrive

    @property
    def assigns(self) -> bool:
        """Whether the server names each sampled client's partition (``partition-assignment``)."""
        return self.cfg.get("partition-assignment", "server") == "server"

    def discover(self, grid: Grid) -> None:
        """``server``: read the node ids once; the population is ``num-clients`` (or one
        client per node); no message. ``node``: ask nodes not seen yet for their partition
        id (one QUERY each)."""
        if self.assigns:
            if self.node_ids is None:
                self.node_ids = np.sort(np.fromiter(settled_node_ids(grid), dtype=np.uint64))
                self.num_partitions = int(self.cfg.get("num-clients", 0)) or len(self.node_ids)
            return
        unknown = [n for n in grid.get_node_ids() if n not in self.partitions]
        if not unknown:
            return
        content = RecordDict({"config": ConfigRecord({"ask": "partition-id"})})
        msgs = [Message(content=content, message_type=MessageType.QUERY, dst_node_id=n) for n in unknown]
        cap = len(grid.get_node_ids())  # a federation of N nodes has at most N partitions
        answers = {}
        for reply in grid.send_and_receive(msgs, timeout=float(self.cfg["round-timeout"])):
            reason = "error reply" if reply.has_error() else check_query_reply(reply.content, cap)
            if reason:
                log(WARNING, "ignored node %s: its partition-id reply is unusable: %s", reply.metadata.src_node_id, reason)
            else:
                metrics = reply.content.metric_records["metrics"]
                answers[reply.metadata.src_node_id] = (int(metrics["partition-id"]), int(metrics["num-partitions"]))
        accepted, self.num_partitions = agree_partitions(answers, self.num_partitions)
        self.partitions.update(accepted)

    def check_simulated(self, grid: Grid) -> None:
        """``partition-assignment=server`` works only on simulated nodes (a real node keeps
        its own data and refuses a partition): ask one node (one QUERY, not one per node)
        and fail at start in one line if it is a real SuperNode."""
        if self.node_ids is None or not len(self.node_ids):
            return
        node = int(self.node_ids[0])
        msg = Message(RecordDict({"config": ConfigRecord({"ask": "simulated"})}), message_type=MessageType.QUERY,
                      dst_node_id=node)
        for reply in grid.send_and_receive([msg], timeout=float(self.cfg["round-timeout"])):
            metrics = None if reply.has_error() else reply.content.metric_records.get("metrics")
            if metrics is not None and metrics.get("simulated") == 0:
                raise ValueError(f"node {node} is a real SuperNode (it keeps its own data), but "
                                 "partition-assignment=server assigns partitions of the server's data: "
                                 "pass partition-assignment=node")

    def check_population(self) -> None:
        """With real SuperNodes the population is the nodes: another ``num-clients`` fails."""
        wanted = int(self.cfg.get("num-clients", 0))
        if not self.assigns and wanted and wanted != len(self.partitions):
            raise ValueError(f"num-clients={wanted} but {len(self.partitions)} SuperNodes answered, each keeping its "
                             "own partition (partition-assignment=node): pass num-clients=0 (one client per node)")

    def known_partitions(self) -> set[int]:
        """Partitions discovered (``node``) or sampled so far (``server``)."""
        return set(self.seen) if self.assigns else set(self.partitions.values())

    def sample(self, grid: Grid, fraction: float, minimum: int, server_round: int, salt: int) -> list[Pick]:
        """Seeded sample of clients as (partition id, node id), in partition order (the
        same partitions in both modes: the same positions drawn from the same count)."""
        self.discover(grid)
        rng = random.Random(hash((int(self.cfg["seed"]), server_round, salt)))
        if self.assigns:
            n = self.num_partitions
            pids = sorted(rng.sample(range(n), min(n, max(int(n * fraction), minimum))))
            self.seen.update(pids)
            nodes = self.node_ids
            return [(p, int(nodes[k % len(nodes)])) for k, p in enumerate(pids)]
        nodes = sorted((n for n in grid.get_node_ids() if n in self.partitions), key=self.partitions.get)
        size = min(len(nodes), max(int(len(nodes) * fraction), minimum))
        return [(self.partitions[n], n) for n in sorted(rng.sample(nodes, size), key=self.partitions.get)]

    def messages(self, record: RecordDict, picks: list[Pick], message_type: str) -> list[Message]:
        """One message per sampled client; with ``partition-assignment=server`` each names
        its client's partition and the run (where the client's state is kept) in its
        config record (the other records are shared, not copied)."""
        if not self.assigns:
            return [Message(content=record, message_type=message_type, dst_node_id=n) for _, n in picks]
        config = dict(record.config_records.get("config", {}))
        config.update({"num-partitions": self.num_partitions, "run-name": str(self.cfg.get("run-name", ""))})
        out = []
        for pid, node in picks:
            content = RecordDict(dict(record.items()))
            content["config"] = ConfigRecord({**config, "partition-id": pid})
            out.append(Message(content=content, message_type=message_type, dst_node_id=node))
        self.outbox, self.by_message = list(zip(out, (p for p, _ in picks))), {}
        return out

    def partition_of(self, msg: Message, default=0):
        """The partition a reply belongs to: by the message it answers (``server``: a node
        serves several clients a round), else by its node (``node``: one partition per
        node, ``partitions``); ``default`` if neither is known."""
        key = msg.metadata.reply_to_message_id
        if self.outbox and key not in self.by_message:  # message ids are set when the grid sends them
            self.by_message = {m.metadata.message_id: p for m, p in self.outbox}
        if key in self.by_message:
            return self.by_message[key]
        return self.partitions.get(msg.metadata.src_node_id, default)

    def by_partition(self, replies) -> list[Message]:
        """Replies in partition-id order: they arrive in any order, and float sums over
        them depend on the order, so aggregates would differ between identical runs."""
        return sorted(replies, key=self.partition_of)
