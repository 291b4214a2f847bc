"""Run one configured experiment in this process, without Ray or a SuperLink.

``LocalGrid`` is a Flower ``Grid`` that hands each message straight to the ClientApp in
this process, one node after another, each node with its own ``Context`` (its node
config holds ``partition-id``/``num-partitions``, as the simulation engine sets them, and
``sim-ground-truth=true``: a simulated node may return evaluation-only data, see
``clients.base.ground_truth_allowed``;
its ``state`` persists across rounds). The ServerApp's ``main`` runs on it unchanged, so
the strategy, the clients, the message contents and the results files are the same as in
``flwr run`` (the tests check that the metrics are identical). What it leaves out is the
engine: no per-client resources, no parallel clients, no reply timeout (a client that
hangs hangs the run). A client that raises gets an error reply, as in the simulation.

Why: a breakpoint in client code works here, and a machine that has PyTorch and a GPU
but no Ray (or a cluster job that runs one process per experiment) can run the same
configs. ``python -m simulations.sweep SWEEP.yaml --local [--jobs N]`` runs a sweep this
way, N runs at a time in separate processes. Flower ships no in-process grid (its
``InMemoryGrid`` is bound to a SuperLink's LinkState, its engine to Ray), hence this
small class.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from common.threads import torch_threads


class LocalGrid(Grid):
    """``num_nodes`` virtual nodes (ids 2..n+1, partition id = id - 2) served in-process."""

    in_process = True  # the ServerApp records no Flower run id for it

    def __init__(self, client_app, num_nodes: int, run_config: dict, run_id: int = 1,
                 client_threads: int | None = None):
        import torch

        self.client_app = client_app
        # torch threads while a client works (the ServerApp sets its own for the server's work)
        self.client_threads = client_threads or torch.get_num_threads()
        self._run = Run.create_empty(run_id)
        # Who "this process" is, which Flower's runtime sets in a ServerApp process: new
        # messages take their run id and source node from it.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
        self.num_nodes, self.run_config, self.run_id = num_nodes, dict(run_config), run_id
        self.contexts: dict[int, Context] = {}  # made on a node's first message: memory grows with nodes used
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return range(2, self.num_nodes + 2)  # 1 is the SuperLink's id

    def context(self, node: int) -> Context | None:
        """The node's context (its state persists across rounds); None for an unknown node."""
        if not 2 <= node < self.num_nodes + 2:
            return None
        if node not in self.contexts:
            self.contexts[node] = Context(run_id=self.run_id, node_id=node, state=RecordDict(),
                                          run_config=dict(self.run_config),
                                          node_config={"partition-id": node - 2, "num-partitions": self.num_nodes,
                                                       "sim-ground-truth": True})
        return self.contexts[node]

    def handle(self, msg: Message) -> Message:
        """One node's reply (an error reply if the ClientApp raised)."""
        context = self.context(msg.metadata.dst_node_id)
        if context is None:
            return Message(Error(ErrorCode.UNKNOWN, f"no node {msg.metadata.dst_node_id}"), reply_to=msg)
        try:
            with torch_threads(self.client_threads):  # the server's count is back for its own work
                return self.client_app(msg, context)
        except Exception as err:  # as the simulation engine: report, reply with an error, go on
            log(logging.ERROR, "node %s: %s", context.node_config["partition-id"], traceback.format_exc())
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(err).__name__}: {err}"),
                           reply_to=msg)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            reply = self.handle(msg)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_local(cfg: dict, num_nodes: int, client_threads: int | None = None) -> Path:
    """One run of the ServerApp on a ``LocalGrid`` (clients with ``client_threads`` torch
    threads, default: this process's); returns the run's results folder."""
    from common.outputs import out_root
    from simulations.client_app import app as client_app
    from simulations.server_app import main

    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(cfg))
    main(LocalGrid(client_app, num_nodes, cfg, client_threads=client_threads), context)
    return out_root(cfg) / cfg["run-name"]


def run_logged(cfg: dict, num_nodes: int, log_path: Path, threads: int | None = None) -> tuple[str, str, float]:
    """``run_local`` with Flower's log lines also in ``log_path`` (as ``flwr run`` writes
    them). Returns the status in the SuperLink's words (``finished:completed`` or
    ``finished:failed``), the reason of a failure, and the seconds. Runs in a sweep's
    worker process too."""
    import time

    from common.progress import log_file
    from simulations.server_app import RunAborted

    t0 = time.perf_counter()
    with log_file(log_path):
        try:
            run_local(cfg, num_nodes, client_threads=threads)
            return "finished:completed", "", time.perf_counter() - t0
        except RunAborted as err:
            return "finished:failed", str(err), time.perf_counter() - t0
        except Exception as err:  # a bug or a crash in the ServerApp: report it, the sweep goes on
            log(logging.ERROR, "%s", traceback.format_exc())
            return "finished:failed", f"{type(err).__name__}: {err}", time.perf_counter() - t0
