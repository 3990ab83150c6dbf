"""The accelerator: P processing elements running a compiled network layer by layer.

    i (int8 stream) -> input load into every PE's buffer (side 0)
    for each layer k:   start all PEs -> results ->
        row-parallel:  per-PE FIFOs -> P requantizers -> one P-activation word at t
        column-split:  per-PE FIFOs -> cross-PE tree -> requantizer -> activation r
      written to every PE's buffer (side (k+1) % 2), the last layer also to the output memory
    o (int8 stream) <- the output memory, in the network's row order

Everything the hardware does is fixed by the compiled Program (hw/arch.py):
memory images, per-layer constants, FIFO depths (from the compile-time drift
of the PEs), the output order table. The streams honour valid/ready; the
cycle count of an inference with no stalls is the program's ``cycles_model``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import PRODUCT_BITS, clog2, index_bits, result_fields, results_may_use_block_ram
from mamfpga.compile.device import memory_style
from mamfpga.compile.passes import fifo_depths
from mamfpga.hw.pe import act_addr_bits_of, act_write_layout, pe_from_program
from mamfpga.hw.requant import Requant
from mamfpga.hw.tree import pipelined_tree, tree_latency

__all__ = ["Accelerator"]


class _ResultFIFO(SyncFIFO):
    """A PE's result FIFO, its storage marked block RAM or logic as the compiler counted it."""

    def __init__(self, *, width: int, depth: int, attrs: dict):
        super().__init__(width=width, depth=depth)
        self._storage_attrs = attrs

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth:
            m.submodules["storage"].attrs.update(self._storage_attrs)
        return m


class Accelerator(wiring.Component):
    """The generated accelerator for one compiled :class:`~mamfpga.compile.ir.Program`."""

    def __init__(self, program, family: str | None = None):
        self.program = program
        cfg = program.config
        self.cfg = cfg
        #: the FPGA family whose block RAM the memories are marked for (default: the program's device's)
        self.family = family if family is not None else (program.device.family if program.device else None)
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(signed(8))),
            "busy": Out(1),
            # where the sequencer is: 0 loading inputs, 1 running a layer, 2 sending outputs,
            # and which layer; for testbenches and the host link's status LEDs
            "phase": Out(2),
            "layer": Out(index_bits(len(program.layers) + 1)),
            # every write into the activation buffers (inputs, then each layer's results), for
            # testbenches that capture what each layer computed; nothing on a board reads it
            "aw": Out(act_write_layout(cfg.pes, act_addr_bits_of(program))),
        })

    def elaborate(self, platform):
        m = Module()
        prog, cfg = self.program, self.cfg
        P = cfg.pes
        log2p = clog2(P)
        K = len(prog.layers)
        pes = [pe_from_program(prog, p, self.family) for p in range(P)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe{p}"] = pe
        act_bits = pes[0].act_addr_bits
        half = 1 << (act_bits - 1)                 # words per ping-pong side
        n_in = prog.net.input_size
        m_out = prog.net.output_size

        # ------------------------------------------------------------ shared write bus
        aw_en, aw_addr = Signal(), Signal(act_bits)
        aw_data, aw_mask = Signal(8 * P), Signal(P)
        for pe in pes:
            m.d.comb += [pe.aw.en.eq(aw_en), pe.aw.addr.eq(aw_addr), pe.aw.data.eq(aw_data),
                         pe.aw.mask.eq(aw_mask)]
        out_words = -(-max(int(a) for a in prog.output_address) // P) + 1
        m.submodules.omem = omem = Memory(shape=unsigned(8 * P), depth=out_words, init=[])
        o_wr = omem.write_port(granularity=8)
        o_rd = omem.read_port(domain="comb")      # M_last values: LUT RAM, read in the same cycle

        # ------------------------------------------------------------ layer constants
        layer = Signal(index_bits(K + 1))
        split = Signal()
        mam = Signal()
        mult, shift, relu = Signal(16), Signal(6), Signal()
        words_to_write = Signal(index_bits(max(max(l.rows_per_pe, l.rows) for l in prog.layers) + 1))
        with m.Switch(layer):
            for k, plan in enumerate(prog.layers):
                with m.Case(k):
                    m.d.comb += [split.eq(plan.split), mam.eq(plan.mode == "mam"), mult.eq(plan.mult),
                                 shift.eq(plan.shift), relu.eq(plan.relu),
                                 words_to_write.eq(plan.rows if plan.split else plan.rows_per_pe)]
        out_side = Signal()                        # side the current layer writes
        m.d.comb += out_side.eq(~layer[0])
        last_layer = Signal()
        m.d.comb += last_layer.eq(layer == K - 1)

        # ------------------------------------------------------------ result FIFOs
        # each record carries the fields some layer reads (mamfpga.compile.arch.result_fields)
        kinds = {(plan.split, plan.mode) for plan in prog.layers}
        rec_fields = result_fields(cfg, kinds)
        rec_bits = sum(w for _, w in rec_fields)
        depths = fifo_depths(prog)
        fifos = []
        for p, pe in enumerate(pes):
            style = memory_style(rec_bits, depths[p], self.family, rom=False)
            if style and not results_may_use_block_ram(kinds):
                style = {"ram_style": "logic"}
            f = _ResultFIFO(width=rec_bits, depth=depths[p], attrs=style)
            m.submodules[f"fifo{p}"] = f
            r = pe.res.payload
            m.d.comb += [f.w_en.eq(pe.res.valid),
                         f.w_data.eq(Cat(*[getattr(r, name) for name, _ in rec_fields]))]
            fifos.append(f)
        all_ready = Signal()
        m.d.comb += all_ready.eq(sum(f.r_rdy for f in fifos) == P) if P > 1 else all_ready.eq(fifos[0].r_rdy)
        pop = Signal()
        for f in fifos:
            m.d.comb += f.r_en.eq(pop)

        offsets, at = {}, 0
        for name, w in rec_fields:
            offsets[name] = (at, w)
            at += w

        def field(f, name):
            """A field of the record at a FIFO's head; 0 for one no layer reads."""
            if name not in offsets:
                return Const(0, signed(cfg.acc_bits if name in ("acc", "sum", "bias") else PRODUCT_BITS))
            off, w = offsets[name]
            return f.r_data[off:off + w].as_signed()

        # ------------------------------------------------------------ row-parallel: P requantizers
        t_idx = Signal.like(words_to_write)            # next word to pop
        rq_row = []
        for p in range(P):
            rq = Requant(acc_bits=cfg.acc_bits, tag_bits=act_bits)
            m.submodules[f"rq{p}"] = rq
            m.d.comb += [rq.i.valid.eq(pop & ~split), rq.i.payload.acc.eq(field(fifos[p], "acc")),
                         rq.i.payload.mult.eq(mult), rq.i.payload.shift.eq(shift),
                         rq.i.payload.relu.eq(relu), rq.i.payload.tag.eq(t_idx)]
            rq_row.append(rq)

        # ------------------------------------------------------------ column-split: tree + one requantizer
        # (built only when a layer is column-split: a program without one needs neither)
        has_split = any(plan.split for plan in prog.layers)
        if has_split:
            leaves = [(field(f, "sum"), field(f, "hi"), field(f, "lo"), field(f, "bias")) for f in fifos]
            shapes = [signed(cfg.acc_bits), signed(PRODUCT_BITS), signed(PRODUCT_BITS), signed(cfg.acc_bits)]

            def combine(depth, a, b):
                return (a[0] + b[0], Mux(a[1] > b[1], a[1], b[1]), Mux(a[2] < b[2], a[2], b[2]), a[3] + b[3])

            root, root_valid = pipelined_tree(m, leaves, shapes, combine, 1, pop & split,
                                              names=("csum", "chi", "clo", "cbias"))
            tree_tag = t_idx
            for d in range(tree_latency(P)):
                nt = Signal.like(t_idx, name=f"split_tag_{d}")
                m.d.sync += nt.eq(tree_tag)
                tree_tag = nt
            rq_split = Requant(acc_bits=cfg.acc_bits, tag_bits=act_bits + log2p + 1)
            m.submodules.rq_split = rq_split
            split_acc = Signal(signed(cfg.acc_bits))
            m.d.comb += split_acc.eq(Mux(mam, root[3] + root[1] + root[2], root[3] + root[0]))
            m.d.comb += [rq_split.i.valid.eq(root_valid & split), rq_split.i.payload.acc.eq(split_acc),
                         rq_split.i.payload.mult.eq(mult), rq_split.i.payload.shift.eq(shift),
                         rq_split.i.payload.relu.eq(relu), rq_split.i.payload.tag.eq(tree_tag)]

        # ------------------------------------------------------------ writes of results
        written = Signal.like(words_to_write)
        row_out = Signal()
        m.d.comb += row_out.eq(rq_row[0].o.valid)
        res_data = Signal(8 * P)
        res_mask = Signal(P)
        res_addr = Signal(act_bits)
        res_en = Signal()
        with m.If(row_out):
            m.d.comb += [res_en.eq(1), res_addr.eq(rq_row[0].o.payload.tag),
                         res_data.eq(Cat(*[rq.o.payload.y for rq in rq_row])), res_mask.eq((1 << P) - 1)]
        if has_split:
            with m.Elif(rq_split.o.valid):
                r = rq_split.o.payload.tag
                m.d.comb += [res_en.eq(1), res_addr.eq(r >> log2p),
                             res_data.eq(Cat(*[rq_split.o.payload.y] * P)),
                             res_mask.eq(1 << (r[:log2p] if log2p else 0))]
        m.d.comb += [o_wr.addr.eq(res_addr), o_wr.data.eq(res_data),
                     o_wr.en.eq(Mux(res_en & last_layer, res_mask, 0))]
        with m.If(res_en):
            m.d.sync += written.eq(written + 1)

        # ------------------------------------------------------------ sequencer
        in_count = Signal(index_bits(n_in + 1))
        out_count = Signal(index_bits(m_out + 1))
        rom = Signal(index_bits(out_words * P + 1))
        with m.Switch(out_count):
            for r, a in enumerate(prog.output_address):
                with m.Case(r):
                    m.d.comb += rom.eq(int(a))
        m.d.comb += o_rd.addr.eq(rom >> log2p)

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), self.phase.eq(0)]
                with m.If(self.i.valid):
                    m.d.comb += [aw_en.eq(1), aw_addr.eq(in_count >> log2p),
                                 aw_data.eq(Cat(*[self.i.payload] * P)),
                                 aw_mask.eq(1 << (in_count[:log2p] if log2p else 0))]
                    m.d.sync += in_count.eq(in_count + 1)
                    with m.If(in_count == n_in - 1):
                        m.d.sync += [in_count.eq(0), layer.eq(0)]
                        m.next = "START"
            with m.State("START"):
                m.d.comb += self.phase.eq(1)
                for pe in pes:
                    m.d.comb += [pe.start.eq(1), pe.layer.eq(layer)]
                m.d.sync += [t_idx.eq(0), written.eq(0)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [pop.eq(all_ready), self.phase.eq(1)]
                with m.If(pop):
                    m.d.sync += t_idx.eq(t_idx + 1)
                m.d.comb += [aw_en.eq(res_en), aw_addr.eq(Mux(out_side, half, 0) | res_addr),
                             aw_data.eq(res_data), aw_mask.eq(res_mask)]
                with m.If(res_en & (written == words_to_write - 1)):
                    with m.If(last_layer):
                        m.d.sync += out_count.eq(0)
                        m.next = "OUT"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "START"
            with m.State("OUT"):
                m.d.comb += self.phase.eq(2)
                sel = rom[:log2p] if log2p else 0
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.eq(o_rd.data.word_select(sel, 8) if P > 1 else o_rd.data)]
                with m.If(self.o.ready):
                    m.d.sync += out_count.eq(out_count + 1)
                    with m.If(out_count == m_out - 1):
                        m.d.sync += out_count.eq(0)
                        m.next = "LOAD"
        m.d.comb += [self.busy.eq(~self.i.ready), self.layer.eq(layer), self.aw.en.eq(aw_en),
                     self.aw.addr.eq(aw_addr), self.aw.data.eq(aw_data), self.aw.mask.eq(aw_mask)]
        return m
