"""A process's share of data preparation in a job of several processes.

Preparation writes only content-addressed caches, so a job splits it without
talking about data: process ``index`` of ``count`` tokenizes cache shards
``index, index + count, ...``, every process waits for the others (``barrier``),
then each reads every shard, tokenizing only those it finds missing (none where
the cache directory is shared, as on one host or an NFS/Lustre cluster; the rest
where it is not). Work that cannot be split (reading a source into its Arrow
cache, training a tokenizer) the first process does alone while the others wait
(`first`), so processes sharing a disk never race to write the same file.

The data layer knows nothing of JAX: `runtime.platform.distributed.data_share` gives the
job's share with its barrier; one process gets ``Share()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def _alone(name: str) -> None:
    """The barrier of a job of one process: there is no one to wait for."""


@dataclass(frozen=True)
class Share:
    index: int = 0
    count: int = 1
    barrier: Callable[[str], None] = field(default=_alone, compare=False)

    def mine(self, items: int) -> range:
        """The indices of ``items`` pieces of work that are this process's."""
        return range(self.index, items, self.count)

    def first(self, name: str, work: Callable[[], T]) -> T:
        """``work()`` on the first process while the others wait, then on the others (which find
        its result cached where they share its disk)."""
        if self.count == 1:
            return work()
        if self.index == 0:
            result = work()
            self.barrier(f"sftc: {name}")
            return result
        self.barrier(f"sftc: {name}")
        return work()
