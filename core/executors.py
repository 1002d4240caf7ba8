"""Where the parallel steps of a run execute: this process (``local``, the default) or a Ray cluster (``ray``).

A run's heavy steps are pure functions over independent units, chosen so that both executors call the *same*
function on the *same* unit and only decide where the call runs:

| step (module)                               | unit                                            | executor call     |
| ------------------------------------------- | ----------------------------------------------- | ----------------- |
| decoding (``core.data.sources``)            | a chunk of file rows decoded at the run's size  | ``map``           |
| frozen backbone (``core.pipeline``)         | a shard of rows through the network at w₀       | ``map_batches``   |
| features (``core.pipeline``)                | a shard of rows: read, ``model.embed``          | ``map_batches``   |
| kNN search (``core.knn``)                   | a shard of query rows against one faiss index   | ``map``           |
| CG score (``core.scores.cg``)               | one one-vs-rest problem (class, draw, chunk)    | ``map``           |
| SI head (``core.scores.si_crossfit``)       | one head problem (fold / part of a repeat)      | ``map``           |
| network SI (``core.scores.unique_info``)    | a shard of rows: projected Jacobian features    | ``map_batches``   |

Reductions stay in the driver and are done in the units' order, so they are the same sums as the local loop:
CG adds each problem's gaps into its positives' totals problem by problem, the SI head sums each problem's
set information, kNN shards are disjoint query rows put back in place. Large read-only inputs (the NTK Gram,
the unit rows, the serialized faiss index, the network) are passed as ``shared`` arguments: the local
executor hands over the objects, Ray puts each once in its object store (zero-copy numpy reads on a node).

``LocalExecutor`` is a plain loop (no Ray import). ``RayExecutor`` imports ``ray`` only when it is created:
``map`` runs one Ray task per unit (``num_gpus=1`` when the step asks for the GPU), ``map_batches`` runs a
Ray Data ``map_batches`` over the shard descriptors with a pool of actors, each holding the shared inputs
(the network, moved to its GPU when ``gpu``). Training stays in the driver (one network trains on one
device); see the README, "Beyond one machine".
"""

from __future__ import annotations

import importlib.util
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.errors import InfoscopeError

EXECUTORS = ("local", "ray")
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5})$")


def check_executor(name: str, address: str | None) -> None:
    """One-line errors for ``--executor`` / ``--ray-address`` before any work starts: an unknown executor,
    an address without ``--executor ray`` or of the wrong form, or ``ray`` asked for without Ray installed."""
    if name not in EXECUTORS:
        raise InfoscopeError(f"unknown --executor {name!r}; choose local or ray")
    if address is not None:
        if name != "ray":
            raise InfoscopeError("--ray-address needs --executor ray")
        if not _ADDRESS.match(str(address)):
            raise InfoscopeError(f"--ray-address {address!r}: give auto, local, HOST:PORT or ray://HOST:PORT")
    if name == "ray" and not ray_available():
        raise InfoscopeError("--executor ray needs Ray, which is not installed: pip install 'infoscope[ray]' "
                             "(or run without --executor ray)")


def ray_available() -> bool:
    """Whether ``import ray`` can succeed (without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def shard_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi)`` row ranges of at most ``size`` rows covering ``range(n)``."""
    size = max(1, int(size))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


class Executor:
    """The interface: ``map`` (one call per unit) and ``map_batches`` (one call per shard of rows)."""

    name = "base"
    remote = False

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, shared: tuple = (), gpu: bool = False) -> list:
        """``[fn(item, *shared) for item in items]``, in the order of ``items``."""
        raise NotImplementedError

    def map_batches(self, fn: Callable[..., np.ndarray], bounds: Sequence[tuple[int, int]], *, shared: tuple = (),
                    gpu: bool = False) -> np.ndarray:
        """``fn((lo, hi), *shared)`` for every shard (an array with ``hi − lo`` rows), concatenated in row order."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What the manifest records about the executor."""
        return {"name": self.name}

    def check_device(self, device: Any) -> None:
        """Refuse, before any work, a run device the executor cannot give its units."""

    def close(self) -> None:
        """Release what the executor started (a Ray cluster it launched itself)."""


class LocalExecutor(Executor):
    """This process, a plain loop: the same calls the pipeline made before executors existed."""

    name = "local"

    def map(self, fn, items, *, shared=(), gpu=False):
        return [fn(item, *shared) for item in items]

    def map_batches(self, fn, bounds, *, shared=(), gpu=False):
        parts = [fn(b, *shared) for b in bounds]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class _ShardActor:
    """A Ray Data actor: holds the shared inputs once (fetched from the object store) and maps shards."""

    def __init__(self, fn: Callable[..., np.ndarray], shared_refs: list, gpu: bool) -> None:
        import ray

        self.fn = fn
        self.shared = [ray.get(r) for r in shared_refs]
        if gpu:
            self.shared = [s.to("cuda") if hasattr(s, "to") and hasattr(s, "parameters") else s for s in self.shared]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs, shard = [], []
        for i, (lo, hi) in enumerate(zip(batch["lo"], batch["hi"], strict=True)):
            outs.append(self.fn((int(lo), int(hi)), *self.shared))
            shard.append(np.full(int(hi) - int(lo), int(batch["shard"][i]), np.int64))
        return {"shard": np.concatenate(shard), "out": np.concatenate(outs)}


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` head must answer a TCP connection: ``ray.init`` would otherwise retry for minutes."""
    if address in (None, "local", "auto"):
        return
    host, _, port = str(address).removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise InfoscopeError(f"--ray-address {address}: no Ray head answers at {host}:{port} "
                             f"({getattr(e, 'strerror', None) or e}); start it with `ray start --head`") from None


def _call(fn: Callable[..., Any], item: Any, *shared: Any) -> Any:
    return fn(item, *shared)


class RayExecutor(Executor):
    """A Ray cluster: ``address`` None starts (or reuses) one in this process, ``"auto"`` joins the cluster of
    this node (``ray start --head``), ``HOST:PORT`` / ``ray://HOST:PORT`` a given head. ``workers`` bounds
    the actors of ``map_batches`` (default: the cluster's CPUs, or GPUs when ``gpu``)."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as e:  # checked by check_executor before a run; here for direct callers
            raise InfoscopeError("--executor ray needs Ray: pip install 'infoscope[ray]'") from e
        self.ray = ray
        self.address = address
        self.started = False
        if not ray.is_initialized():
            _check_reachable(address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            try:
                if address in (None, "local"):
                    ray.init(**kwargs)
                else:
                    ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InfoscopeError(f"--ray-address {address or 'local'}: cannot connect to a Ray cluster "
                                     f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
            self.started = True
        res = ray.cluster_resources()
        self.cpus = int(res.get("CPU", 1))
        self.gpus = int(res.get("GPU", 0))
        self.workers = max(1, int(workers) if workers else self.cpus)
        self._task = ray.remote(_call)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "cluster_cpus": self.cpus, "cluster_gpus": self.gpus,
                "nodes": len([n for n in self.ray.nodes() if n.get("Alive")]), "ray": self.ray.__version__}

    def check_device(self, device: Any) -> None:
        """A CUDA run needs GPUs in the cluster: its GPU tasks and actors would otherwise wait for ever."""
        if str(device).startswith("cuda") and self.gpus == 0:
            raise InfoscopeError("--device cuda with --executor ray: the Ray cluster has no GPUs (start its nodes "
                                 "with GPUs visible, e.g. `ray start --num-gpus 1`, or use --device cpu)")

    def _put(self, shared: tuple) -> list:
        return [self.ray.put(s) for s in shared]

    def map(self, fn, items, *, shared=(), gpu=False):
        refs = self._put(shared)
        task = self._task.options(num_cpus=1, num_gpus=1 if gpu else 0)
        return self.ray.get([task.remote(fn, item, *refs) for item in items])

    def map_batches(self, fn, bounds, *, shared=(), gpu=False):
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset progress lines in the CLI
        ray.data.DataContext.get_current().enable_progress_bars = False
        bounds = list(bounds)
        if not bounds:
            return np.zeros((0,), np.float32)
        items = [{"shard": i, "lo": lo, "hi": hi} for i, (lo, hi) in enumerate(bounds)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        pool = max(1, min(self.workers, len(items), self.gpus if gpu else self.workers))
        out = ds.map_batches(_ShardActor, fn_constructor_args=(fn, self._put(shared), gpu), batch_size=1,
                             batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=1,
                             num_gpus=1 if gpu else 0)
        parts: dict[int, np.ndarray] = {}
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            shard, values = batch["shard"], batch["out"]
            for s in np.unique(shard):
                parts[int(s)] = values[shard == s]
        missing = [i for i in range(len(bounds)) if i not in parts]
        if missing:
            raise RuntimeError(f"Ray Data returned no rows for shard(s) {missing[:5]}")
        return np.concatenate([parts[i] for i in range(len(bounds))])

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def make_executor(name: str = "local", address: str | None = None, workers: int | None = None) -> Executor:
    """The executor ``--executor name`` asks for (validated by :func:`check_executor`)."""
    check_executor(name, address)
    return RayExecutor(address, workers) if name == "ray" else LocalExecutor()
