"""Peak memory of a block of work, for the figures every command and benchmark reports."""

from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PeakMemory:
    """The process's peak resident memory while a block runs (Linux: /proc/self/statm, sampled
    every 20 ms; CUDA: the allocator's peak), in MiB; None where neither is available.

    Before the block, garbage is collected and glibc is asked to return freed memory to the
    system (``malloc_trim``): otherwise memory an earlier method freed but the allocator kept
    would count toward every later method's peak.
    """

    def __init__(self, host: bool = False) -> None:
        """``host``: resident memory even where CUDA is available (a CPU-only measurement)."""
        self.peak_mb: float | None = None
        self.start_mb: float | None = None  # the resident memory when the block began
        self._host = host
        self._stop = threading.Event()
        self._page = 4096
        try:
            import os

            self._page = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass

    def _rss_mb(self) -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2**20
        except (OSError, ValueError, IndexError):
            return None

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = self._rss_mb()
            if rss is not None:
                self.peak_mb = rss if self.peak_mb is None else max(self.peak_mb, rss)
            self._stop.wait(0.02)

    @staticmethod
    def _release_freed_memory() -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to release
            pass

    @contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        self._release_freed_memory()
        self.start_mb = self._rss_mb()
        cuda = torch.cuda.is_available() and not self._host
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            if cuda:
                self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
