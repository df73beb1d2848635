"""Weighted sampling in O(1): Vose's alias method.

M. D. Vose, "A linear algorithm for generating random numbers with a given
distribution", IEEE Trans. Software Engineering 17(9), 1991 (after A. J. Walker, 1974).
Built in O(n) at rebuild; a draw costs one uniform number (a random float, or a 32-bit
hash for the hashing algorithms) and one comparison, whatever the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

_SCALE32 = 1 << 32


class AliasTable(Generic[T]):
    """Immutable table drawing `items[i]` with probability `weights[i] / sum(weights)`.

    `lookup` maps a 32-bit hash; a draw from a random float reads `first`, `second` and
    `prob` (random_choice does it inline, on its hot path)."""

    __slots__ = ("first", "n", "prob", "prob32", "second")

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        n = len(items)
        if n == 0 or len(weights) != n:
            raise ValueError("an alias table needs one positive weight per item")
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError("alias table weights must be >= 0 with a positive sum")
        scaled = [w * n / total for w in weights]
        prob = [1.0] * n
        alias = list(range(n))
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s = small.pop()
            g = large.pop()
            prob[s] = scaled[s]
            alias[s] = g
            scaled[g] = scaled[g] + scaled[s] - 1.0
            (small if scaled[g] < 1.0 else large).append(g)
        # Leftovers are 1.0 up to rounding error.
        self.n = n
        self.prob = prob
        self.prob32 = [min(_SCALE32, int(p * _SCALE32)) for p in prob]
        self.first = list(items)
        self.second = [items[a] for a in alias]

    def lookup(self, h32: int) -> T:
        """The item for a uniform 32-bit integer (a hash): the same key, the same item."""
        x = h32 * self.n
        i = x >> 32
        return self.first[i] if (x & 0xFFFFFFFF) < self.prob32[i] else self.second[i]
