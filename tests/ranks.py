"""Process groups of a few ranks on this machine, for the tests of distributed code."""

import multiprocessing

import torch
import torch.multiprocessing as mp

from tests.ports import free_port


def run_ranks(fn, world, *args):
    """Calls ``fn(rank, world, port, *args)`` in ``world`` processes and waits for them.

    The processes are forked from a fork server that imported torch (and ``fn``'s module)
    once: ~6 s cheaper per process than ``mp.spawn`` here, and clean of the test process's
    threads (a plain fork of a process that ran OpenMP hangs). One intra-op thread per rank:
    the ranks share two cores."""
    multiprocessing.get_context("forkserver").set_forkserver_preload([fn.__module__])
    mp.start_processes(_entry, args=(fn, world, free_port(), args), nprocs=world,
                       start_method="forkserver")


def _entry(rank, fn, world, port, args):
    torch.set_num_threads(1)
    fn(rank, world, port, *args)
