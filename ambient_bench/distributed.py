"""Multi-process training under ``torchrun``: process group, rank, and the global-batch split.

    torchrun --nproc_per_node=8 -m ambient_bench run benchmarks/<suite>.yaml

Every rank runs the CLI. Rank 0 runs every stage and writes every file; the other ranks join
the training stages, where each computes the gradient of its slice of the global batch and
DistributedDataParallel averages them, and the stages whose work is a list of independent
batches (sampling, annotation, evaluation), where each rank computes every world-th batch and
the results are gathered (``split_map``). All ranks draw the whole global batch (indices,
noise levels, noise) from the (seed, step) stream and keep their slice, so the sample order
and the checkpoint do not depend on the number of processes: a checkpoint written by two
ranks resumes in one process, and the other way round.

Every process that joins the group leaves it before it exits (``shutdown``, also registered with
``atexit``): a gloo or NCCL group still alive when the interpreter is torn down has its C++ worker
threads destroyed unjoined, and the process dies of SIGABRT ("terminate called without an active
exception") after its work is done, now and then.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_splitting = False  # inside a stage every rank runs (see ``splitting``)


def init_from_env() -> None:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); no-op otherwise.

    gloo on CPU, NCCL on CUDA. The timeout is long because rank 0 alone runs the stages between
    training stages (mixing, classifiers, sampling, evaluation) while the others wait.
    """
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=24))
        atexit.register(shutdown)  # whatever way the process ends, short of a signal


def shutdown() -> None:
    """Destroy the process group (joins its C++ threads); a no-op outside one or when already done.

    Collectives are synchronous here, so a rank that gets here (returning or raising) has none in
    flight and leaves without the others (one still waiting on it in a collective fails there:
    gloo sees the connection close, and torchrun stops every rank once one exits non-zero).
    Called in ``finally`` by the entry points (``run``, a job's ``run_stage``) and at exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """``init_from_env`` on entry, ``shutdown`` on the way out, returning or raising."""
    init_from_env()
    try:
        yield
    finally:
        shutdown()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def local_slice(global_batch: int) -> slice:
    """This rank's part of a global batch; the batch must divide evenly."""
    world = world_size()
    if global_batch % world:
        from ambient_bench.errors import UserError

        raise UserError(f"train.batch {global_batch} does not split evenly over {world} processes; "
                        f"set train.batch to a multiple of {world}")
    size = global_batch // world
    return slice(rank() * size, (rank() + 1) * size)


def mean_over_ranks(value: float) -> float:
    """The mean of a per-rank scalar (for logging the global-batch loss)."""
    if world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world_size()


@contextlib.contextmanager
def splitting() -> Iterator[None]:
    """Inside, ``split_map`` divides its batches across the ranks. Every rank must enter it around
    the same stage (the runner does, for the stages every rank joins): the split is a collective,
    and a rank that computed everything alone while the others waited would never meet them."""
    global _splitting
    before, _splitting = _splitting, world_size() > 1
    try:
        yield
    finally:
        _splitting = before


def split_map(work: Callable[[int], T], count: int, what: str = "") -> list[T]:
    """``[work(0), ..., work(count - 1)]``. Inside ``splitting`` rank r computes the items r, r + world,
    ... and every rank receives every result, in order; elsewhere one process computes them all.

    Each item is computed exactly as one process computes it, so the gathered list is bit-identical
    to one rank's when ``work(i)`` depends on ``i`` only. Results must be CPU objects (they are
    pickled). A ``split_map`` inside ``work`` runs unsplit: only this rank is in it.
    """
    global _splitting
    if not _splitting:
        return [work(i) for i in range(count)]
    me, world = rank(), world_size()
    _splitting = False
    try:
        mine = {i: work(i) for i in range(me, count, world)}
    finally:
        _splitting = True
    if what:
        print(f"rank {me} of {world}: {what}: {len(mine)} of {count} batches", flush=True)
    gathered: list[dict[int, T] | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    merged = {i: result for part in gathered for i, result in part.items()}
    return [merged[i] for i in range(count)]


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (ranks that decided differently, e.g. whether a file exists,
    would not meet in the same collectives); ``value`` in one process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(value: T) -> T:
    """``from_main`` inside ``splitting``, where every rank runs the same code; ``value`` elsewhere
    (rank 0 alone in a stage the others do not join)."""
    return from_main(value) if _splitting else value
