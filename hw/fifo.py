"""A synchronous FIFO whose storage carries memory attributes (the PEs' result FIFOs).

Amaranth's :class:`~amaranth.lib.fifo.SyncFIFO` reads its storage through a combinational port;
the register a user puts after ``r_data`` is folded into the port by yosys (a block RAM's
synchronous read), and only there does yosys honour ``no_rw_check`` (no old-value logic between
the block and what reads it, :func:`mamfpga.compile.device.memory_style`). The buffered FIFO's
port is synchronous already, and yosys builds that logic around it whatever the attributes say.
"""

from __future__ import annotations

from amaranth.lib.fifo import SyncFIFO

__all__ = ["MarkedFIFO"]


class MarkedFIFO(SyncFIFO):
    """A :class:`SyncFIFO` whose storage memory takes ``attrs`` (``ram_style``, ``no_rw_check``)."""

    def __init__(self, *, width: int, depth: int, attrs: dict):
        super().__init__(width=width, depth=depth)
        self._storage_attrs = dict(attrs)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth:
            m.submodules["storage"].attrs.update(self._storage_attrs)
        return m
