"""The decode group: running requests that decode one token per step, kept in aggregate.

In fast mode the scheduler does not touch each decoding request every step. The longest prefix
of the running order whose requests all decode (one position, one token, every step) is kept
as a group with a shared decode counter ``G``: a member that joined at ``g0`` with ``c0``
computed and ``o0`` output tokens has ``c0 + (G − g0)`` computed and ``o0 + (G − g0)``
outputs now. The batch sums the perf model needs are kept as totals (``n`` members,
``total_computed``), a member needs a new KV block on the steps where its computed count is a
multiple of ``block_size`` (counted per phase ``G mod block_size``), and finishes come from a
heap keyed by the ``G`` at which each member emits its last token. One step of the group is then
O(1) (plus the block allocations and finishes that really happen), and a stretch of steps with
no event can be priced in one vectorized call (see :mod:`simkit.fastpath`).

Members' ``Request`` fields are stale while they are in the group; :meth:`materialize`
brings a member up to date (on finish, preemption, or when the scheduler falls back to the
exact per-request step).
"""

from __future__ import annotations

import heapq

from simkit.request import Request

__all__ = ["DecodeGroup"]


class DecodeGroup:
    """Aggregate state of the decoding prefix of the running order (see module docstring)."""

    __slots__ = ("_heap", "_seq", "block_size", "buckets", "cnt", "g", "last_end", "members",
                 "n", "prefix", "total_computed")

    def __init__(self, block_size: int, *, prefix: bool) -> None:
        self.block_size = block_size
        self.prefix = prefix
        self.g = 0
        self.n = 0
        self.total_computed = 0
        self.members: dict[int, Request] = {}  # insertion order = running order
        self.cnt = [0] * block_size  # members needing a block when g % block_size == phase
        self.buckets: list[dict[int, Request]] | None = (
            [{} for _ in range(block_size)] if prefix else None)
        self._heap: list[tuple[int, int, Request]] = []
        self._seq = 0
        self.last_end = -1.0  # end time of the group's most recent step

    # --------------------------------------------------------------------------- members
    def _phase(self, request: Request) -> int:
        return (request.group_g0 - request.group_c0) % self.block_size  # type: ignore[attr-defined]

    def join(self, request: Request) -> None:
        """Add a request that just emitted a token and will decode from the next step on."""
        request.group_g0 = self.g  # type: ignore[attr-defined]
        request.group_c0 = request.num_computed_tokens  # type: ignore[attr-defined]
        request.group_o0 = request.num_output_tokens  # type: ignore[attr-defined]
        self.members[request.id] = request
        self.n += 1
        self.total_computed += request.num_computed_tokens
        phase = self._phase(request)
        self.cnt[phase] += 1
        if self.buckets is not None:
            self.buckets[phase][request.id] = request
        self._seq += 1
        request.group_seq = self._seq  # type: ignore[attr-defined]
        g_finish = self.g + request.max_tokens - request.num_output_tokens
        heapq.heappush(self._heap, (g_finish, self._seq, request))

    def materialize(self, request: Request) -> None:
        """Bring a member's Request fields up to date (it stays a member)."""
        d = self.g - request.group_g0  # type: ignore[attr-defined]
        request.num_computed_tokens = request.group_c0 + d  # type: ignore[attr-defined]
        request.num_output_tokens = request.group_o0 + d  # type: ignore[attr-defined]
        if d > 0:
            request.last_token_time = self.last_end
        if not self.prefix:
            request.num_blocks = -(-request.num_computed_tokens // self.block_size)

    def remove(self, request: Request) -> None:
        """Drop a member (after :meth:`materialize`); its heap entry is skipped lazily."""
        del self.members[request.id]
        self.n -= 1
        self.total_computed -= request.num_computed_tokens
        phase = self._phase(request)
        self.cnt[phase] -= 1
        if self.buckets is not None:
            del self.buckets[phase][request.id]

    def dissolve(self) -> list[Request]:
        """Materialize and remove every member; return them in running order."""
        members = list(self.members.values())
        for request in members:
            self.materialize(request)
        self.members = {}
        self.n = 0
        self.total_computed = 0
        self.cnt = [0] * self.block_size
        if self.buckets is not None:
            self.buckets = [{} for _ in range(self.block_size)]
        self._heap = []
        return members

    # ------------------------------------------------------------------------------ steps
    def blocks_needed_now(self) -> int:
        """New KV blocks the members need for the next step."""
        return self.cnt[self.g % self.block_size]

    def bucket_now(self) -> dict[int, Request]:
        assert self.buckets is not None
        return self.buckets[self.g % self.block_size]

    def steps_to_next_finish(self) -> int:
        """Steps until the next member emits its last token (that step included)."""
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)  # entry of a member that left (finished or preempted)
        return heap[0][0] - self.g if heap else 1 << 62

    def _valid(self, entry: tuple[int, int, Request]) -> bool:
        request = entry[2]
        return (self.members.get(request.id) is request
                and request.group_seq == entry[1])  # type: ignore[attr-defined]

    def advance(self, steps: int, end_time: float) -> list[Request]:
        """Account ``steps`` decode steps ending at ``end_time``; return members that finished
        (materialized and removed), in running order."""
        self.g += steps
        self.total_computed += self.n * steps
        self.last_end = end_time
        heap = self._heap
        done: list[Request] = []
        while heap and heap[0][0] <= self.g:
            entry = heapq.heappop(heap)
            if not self._valid(entry):
                continue
            request = entry[2]
            done.append(request)
        if done:
            if len(done) > 1:  # running order = join order
                done.sort(key=lambda r: r.group_seq)  # type: ignore[attr-defined]
            for request in done:
                self.materialize(request)
                self.remove(request)
        return done
