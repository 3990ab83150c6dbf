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
cycle count of an inference with no stalls is :func:`cycle_model`.
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mamfpga.hw.arch import clog2, index_bits
from mamfpga.hw.pe import PRODUCT_BITS, pe_from_program
from mamfpga.hw.requant import Requant
from mamfpga.hw.tree import pipelined_tree, tree_latency

__all__ = ["Accelerator", "fifo_depths", "cycle_model", "simulate"]


def fifo_depths(program) -> list[int]:
    """Per PE, the result FIFO depth that never fills: the largest number of results a PE
    has produced that the slowest PE has not yet matched, over every layer."""
    P = program.config.pes
    depth = [1] * P
    for plan in program.layers:
        finish = [np.cumsum(plan.row_words[p]) for p in range(P)]   # cycle of each row's result
        pop = np.max(np.stack(finish), axis=0) + 1                   # when row t leaves every FIFO
        for p in range(P):
            for t, f in enumerate(finish[p]):
                held = t + 1 - int(np.searchsorted(pop, f, side="right"))
                depth[p] = max(depth[p], held + 1)
    return depth


class Accelerator(wiring.Component):
    """The generated accelerator for one compiled :class:`~mamfpga.sw.compiler.Program`."""

    def __init__(self, program):
        self.program = program
        cfg = program.config
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(signed(8))),
            "busy": Out(1),
            # where the sequencer is: 0 loading inputs, 1 running a layer, 2 sending outputs,
            # and which layer; for testbenches and the host link's status LEDs
            "phase": Out(2),
            "layer": Out(index_bits(len(program.layers) + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        prog, cfg = self.program, self.cfg
        P = cfg.pes
        log2p = clog2(P)
        K = len(prog.layers)
        pes = [pe_from_program(prog, p) for p in range(P)]
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
        rec_bits = 3 * cfg.acc_bits + 2 * PRODUCT_BITS
        depths = fifo_depths(prog)
        fifos = []
        for p, pe in enumerate(pes):
            f = SyncFIFO(width=rec_bits, depth=depths[p])
            m.submodules[f"fifo{p}"] = f
            r = pe.res.payload
            m.d.comb += [f.w_en.eq(pe.res.valid),
                         f.w_data.eq(Cat(r.acc, r.sum, r.bias, r.hi, r.lo))]
            fifos.append(f)
        all_ready = Signal()
        m.d.comb += all_ready.eq(sum(f.r_rdy for f in fifos) == P) if P > 1 else all_ready.eq(fifos[0].r_rdy)
        pop = Signal()
        for f in fifos:
            m.d.comb += f.r_en.eq(pop)

        def field(f, k):
            a = cfg.acc_bits
            offs = [0, a, 2 * a, 3 * a, 3 * a + PRODUCT_BITS]
            widths = [a, a, a, PRODUCT_BITS, PRODUCT_BITS]
            return f.r_data[offs[k]:offs[k] + widths[k]].as_signed()

        # ------------------------------------------------------------ row-parallel: P requantizers
        t_idx = Signal.like(words_to_write)            # next word to pop
        rq_row = []
        for p in range(P):
            rq = Requant(acc_bits=cfg.acc_bits, tag_bits=act_bits)
            m.submodules[f"rq{p}"] = rq
            m.d.comb += [rq.i.valid.eq(pop & ~split), rq.i.payload.acc.eq(field(fifos[p], 0)),
                         rq.i.payload.mult.eq(mult), rq.i.payload.shift.eq(shift),
                         rq.i.payload.relu.eq(relu), rq.i.payload.tag.eq(t_idx)]
            rq_row.append(rq)

        # ------------------------------------------------------------ column-split: tree + one requantizer
        # (built only when a layer is column-split: a program without one needs neither)
        has_split = any(plan.split for plan in prog.layers)
        if has_split:
            leaves = [(field(f, 1), field(f, 3), field(f, 4), field(f, 2)) for f in fifos]
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
        m.d.comb += [self.busy.eq(~self.i.ready), self.layer.eq(layer)]
        return m


def cycle_model(program) -> int:
    """Cycles of one inference with no stalls, first input beat to last output beat: the
    compiler's model (mamfpga.hw.arch), which tests/hw/test_accelerator.py holds this RTL to."""
    return program.cycles_per_inference


def simulate(program, x, *, gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0,
             max_cycles: int | None = None):
    """Run inputs x (int8 [B, N_0], the program's columns) through the accelerator in Amaranth's
    simulator. Returns (outputs int8 [B, M], cycles of sample 0 from its first input beat to
    its last output beat). Random input gaps and output stalls when asked."""
    import random

    from amaranth import ClockDomain
    from amaranth.sim import Simulator

    dut = Accelerator(program)
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain("sync")
    n_out = program.net.output_size
    outs, marks, done = [], {}, []
    clock = {"t": 0}

    async def producer(ctx):
        rng = random.Random(seed)
        for s, sample in enumerate(x):
            for j, v in enumerate(sample):
                while gap_prob and rng.random() < gap_prob:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(v))
                await ctx.tick().until(dut.i.ready)
                if s == 0 and j == 0:
                    marks["start"] = clock["t"] - 1
                ctx.set(dut.i.valid, 0)
        done.append("producer")

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for s in range(len(x)):
            row = []
            for _ in range(n_out):
                while stall_prob and rng.random() < stall_prob:
                    ctx.set(dut.o.ready, 0)
                    await ctx.tick()
                ctx.set(dut.o.ready, 1)
                (v,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
                row.append(v)
                ctx.set(dut.o.ready, 0)
            if s == 0:
                marks["end"] = clock["t"] - 1
            outs.append(row)
        done.append("consumer")

    async def count(ctx):
        while True:
            await ctx.tick()
            clock["t"] += 1

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(count, background=True)
    limit = max_cycles or (len(x) * (program.cycles_per_inference * 4 + 1000) + 10_000)
    step = 10_000
    for t0 in range(0, limit, step):
        sim.run_until((t0 + step) * 1e-6)
        if len(done) == 2:
            break
    else:
        raise TimeoutError(f"the accelerator did not finish {len(x)} samples within {limit} cycles")
    return np.array(outs, dtype=np.int8).reshape(len(x), n_out), marks["end"] - marks["start"] + 1
