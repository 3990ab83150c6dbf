"""The accelerator: P processing elements running a compiled network layer by layer.

    i (int8 stream) -> input load into every PE's buffer (side 0, at the input's addresses)
    for each layer k:   start all PEs (``cycles_model`` of layer k - 1 after its start: layers
                        overlap, mamfpga.compile.schedule) -> results (a conv layer's at every position) ->
        row-parallel:  per-PE FIFOs -> P requantizers -> [fused max pool] -> one P-activation
                       word at the write counters' address (mamfpga.compile.maps.OutGen)
        column-split:  per-PE FIFOs -> cross-PE tree -> requantizer -> activation r
      -> the registered write stage -> every PE's buffer (side (k+1) % 2), the last layer
      also to the output memory
    o (int8 stream) <- the output memory, in the network's row order

Everything the hardware does is fixed by the compiled Program (compile/arch.py, compile/maps.py):
memory images, per-layer constants, FIFO depths (from the compile-time drift
of the PEs), the output order table. The streams honour valid/ready; the
cycle count of an inference with no stalls is the program's ``cycles_model``. The fetch, the
pops and the write side each follow their own layer, so that layer k + 1 runs while layer k
drains: the sequencer starts layers at the compiled distances, the pops and the writes move to
the next layer after the last item of theirs (counted), the PEs' back ends likewise
(mamfpga.hw.pe).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import numpy as np

from mamfpga.compile.arch import (PRODUCT_BITS, SHIFT_BITS, clog2, index_bits, result_fields,
                                   results_may_use_block_ram)
from mamfpga.compile.maps import OutGen
from mamfpga.compile.device import memory_style
from mamfpga.compile.passes import fifo_depths
from mamfpga.hw.compare import greater, less
from mamfpga.hw.fifo import MarkedFIFO
from mamfpga.hw.pe import act_addr_bits_of, act_write_layout, pe_from_program
from mamfpga.hw.requant import Requant
from mamfpga.hw.tree import pipelined_tree, tree_latency

__all__ = ["Accelerator"]


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
            # the layer whose result ``aw`` writes (layers overlap: not always ``layer``)
            "aw_layer": Out(index_bits(len(program.layers) + 1)),
        })

    def _input_walk(self) -> dict:
        """The input's address walk: ``first`` address; ``w`` values a row, ``h`` rows a channel
        plane; ``row_skip`` and ``plane_skip`` addresses of border jumped after a row and a plane.
        A vector input is one row. The walk is checked against the compiler's addresses."""
        prog = self.program
        net = prog.net
        a = np.asarray(prog.input_address, dtype=np.int64)
        if net.layers[0].kind == "conv2d":
            # the skips as the compiler's addresses have them (the border, and the extra columns
            # of a pitched input map: mamfpga.compile.maps)
            c, h, w = net.input_shape
            row_skip = int(a[w] - a[w - 1] - 1) if h > 1 else 0
            plane_skip = int(a[w * h] - a[w * h - 1] - 1 - row_skip) if c > 1 else 0
            walk = {"first": int(a[0]), "w": w, "h": h, "row_skip": row_skip, "plane_skip": plane_skip}
        else:
            walk = {"first": int(a[0]), "w": len(a), "h": 1, "row_skip": 0, "plane_skip": 0}
        steps = np.ones(len(a) - 1, dtype=np.int64)
        idx = np.arange(1, len(a))
        steps[idx % walk["w"] == 0] += walk["row_skip"]
        steps[idx % (walk["w"] * walk["h"]) == 0] += walk["plane_skip"]
        assert np.array_equal(np.diff(a), steps), "the input walk does not match the compiler's input addresses"
        return walk

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
        # the output memory holds the last layer's region, from its first word on
        out_first = min(int(a) for a in prog.output_address) // P
        out_words = max(int(a) for a in prog.output_address) // P - out_first + 1
        m.submodules.omem = omem = Memory(shape=unsigned(8 * P), depth=out_words, init=[])
        o_wr = omem.write_port(granularity=8)
        o_rd = omem.read_port(domain="comb")      # M_last values: LUT RAM, read in the same cycle

        # ------------------------------------------------------------ layers in flight
        # Layers overlap (mamfpga.compile.schedule): the PEs start layer k + 1 while layer k's
        # results drain. Three parts of the array follow their own layer, each moving to the next
        # when it has seen the layer's last item: the fetch (``layer``, the sequencer's), the pops
        # from the result FIFOs (``player``: the requantizers' constants, from the layer index
        # registered with each record) and the write side (``wlayer``: where results go). Each
        # part keeps the next layer's index in a register, and its counters load that layer's
        # constants through case tables on it (a register, a table, a register).
        layer = Signal(index_bits(K + 1))

        def table(idx, shape, values, name):
            """The value for layer ``idx``: a case table (combinational)."""
            s = Signal(shape, name=name)
            with m.Switch(idx):
                for k in range(K):
                    with m.Case(k):
                        m.d.comb += s.eq(values[k])
            return s

        plans = prog.layers
        uniform = [np.ndim(p.mult) == 0 and np.ndim(p.shift) == 0 for p in plans]
        # results per layer: a split layer's rows; a row-parallel one's rows at every position
        # its PEs walk (a pool's window included)
        n_results = [p.rows if p.split else p.positions * len(p.row_words[0]) for p in plans]
        gens = [l.out if l.out is not None else OutGen(0, 1, 1, 0, 1) for l in plans]
        bank_rows = max([g.rows for g in gens if g.window > 1], default=1)
        res_bits = index_bits(max(n_results) + 1)
        # ------------------------------------------------------------ result FIFOs
        # each record carries the fields some layer reads (mamfpga.compile.arch.result_fields)
        kinds = {(plan.split, plan.mode) for plan in prog.layers}
        rec_fields = result_fields(cfg, kinds, prog.scales)
        rec_bits = sum(w for _, w in rec_fields)
        depths = fifo_depths(prog)
        fifos = []
        for p, pe in enumerate(pes):
            # the head is read only while the FIFO is not empty, and a full one takes no write
            style = memory_style(rec_bits, depths[p], self.family, rom=False, collisions_unused=True)
            if style and not results_may_use_block_ram(kinds):
                style = {"ram_style": "logic"}
            f = MarkedFIFO(width=rec_bits, depth=depths[p], attrs=style)
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

        # the records popped, registered as they leave the FIFOs (a block RAM's output straight
        # into the requantizers' operand registers and their multipliers was the ECP5's critical
        # path): the requantizers and the cross-PE tree take them a cycle after the pop
        heads = []
        for p, f in enumerate(fifos):
            # without a reset on the ECP5: yosys merges the register into the FIFO's DP16KD as its
            # read, and a reset there became the block's output reset, which the placed model
            # (mamfpga.boards.placed) has no model of; a record needs no reset (``popped`` says
            # when one is there). The iCE40 netlist is left as its timing was measured
            q = Signal(rec_bits, name=f"fifo{p}_head", reset_less=self.family == "ecp5")
            m.d.sync += q.eq(f.r_data)
            heads.append(q)
        popped, t_popped = Signal(), Signal(res_bits)       # the pop, and its result index, registered

        def field(f, name):
            """A field of the popped record from a FIFO; 0 for one no layer reads."""
            if name not in offsets:
                return Const(0, signed(cfg.acc_bits if name in ("acc", "sum", "bias") else PRODUCT_BITS))
            off, w = offsets[name]
            q = heads[fifos.index(f)]
            if name in ("mult", "shift"):
                return q[off:off + w]
            return q[off:off + w].as_signed()


        # ------------------------------------------------------------ pops: the requantizers' constants
        # for each record from its own layer (``p_layer``, registered with the pop): the pops of
        # the next layer may follow the last of this one by two cycles
        player = Signal(index_bits(K))
        t_idx = Signal(res_bits, init=0)                # the result popped next, within its layer
        pop_left = Signal(res_bits, init=n_results[0] - 1)
        pop_last = Signal(init=n_results[0] == 1)
        p_next = Signal.like(player, init=1 % K)
        nxp = {"left": table(p_next, res_bits, [n - 1 for n in n_results], "next_pop_left"),
               "last": table(p_next, 1, [int(n == 1) for n in n_results], "next_pop_last")}
        with m.If(pop):
            with m.If(pop_last):
                m.d.sync += [player.eq(p_next), p_next.eq(Mux(p_next == K - 1, 0, p_next + 1)), t_idx.eq(0),
                             pop_left.eq(nxp["left"]), pop_last.eq(nxp["last"])]
            with m.Else():
                m.d.sync += [t_idx.eq(t_idx + 1), pop_left.eq(pop_left - 1), pop_last.eq(pop_left == 1)]
        # the popped record's layer, registered with it (and carried alongside the cross-PE tree):
        # its constants from case tables on it, in front of the requantizers' operand registers
        p_layer = Signal.like(player)
        m.d.sync += p_layer.eq(player)

        def rq_consts(idx, suffix):
            return dict(
                split=table(idx, 1, [int(p.split) for p in plans], f"split{suffix}"),
                mam=table(idx, 1, [int(p.mode == "mam") for p in plans], f"mam{suffix}"),
                relu=table(idx, 1, [int(p.relu) for p in plans], f"relu{suffix}"),
                even=table(idx, 1, [int(p.rounding == "half_even") for p in plans], f"even{suffix}"),
                n=table(idx, 4, [p.act_max.bit_length() for p in plans], f"act_n{suffix}"),   # act_max = 2**n - 1
                mult=table(idx, cfg.mult_bits, [int(p.mult) if u else 0 for p, u in zip(plans, uniform)], f"mult{suffix}"),
                shift=table(idx, SHIFT_BITS, [int(p.shift) if u else 0 for p, u in zip(plans, uniform)], f"shift{suffix}"))

        pc = rq_consts(p_layer, "")
        p_split, p_mult, p_shift, p_relu, p_n, p_even = pc["split"], pc["mult"], pc["shift"], pc["relu"], pc["n"], pc["even"]

        # ------------------------------------------------------------ row-parallel: P requantizers
        m.d.sync += [popped.eq(pop), t_popped.eq(t_idx)]
        clamps = frozenset(plan.act_max.bit_length() for plan in prog.layers)
        rq_row = []
        for p in range(P):
            rq = Requant(acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits, tag_bits=act_bits, clamps=clamps,
                         family=self.family)
            m.submodules[f"rq{p}"] = rq
            m.d.comb += [rq.i.valid.eq(popped & ~p_split), rq.i.payload.acc.eq(field(fifos[p], "acc")),
                         # a row's own mult and shift in a program with per-row scales
                         rq.i.payload.mult.eq(field(fifos[p], "mult") if prog.scales else p_mult),
                         rq.i.payload.shift.eq(field(fifos[p], "shift") if prog.scales else p_shift),
                         rq.i.payload.relu.eq(p_relu), rq.i.payload.n.eq(p_n), rq.i.payload.even.eq(p_even),
                         rq.i.payload.tag.eq(t_popped)]
            rq_row.append(rq)

        # ------------------------------------------------------------ column-split: tree + one requantizer
        # (built only when a layer is column-split: a program without one needs neither)
        has_split = any(plan.split for plan in prog.layers)
        if has_split:
            leaves = [(field(f, "sum"), field(f, "hi"), field(f, "lo"), field(f, "bias")) for f in fifos]
            shapes = [signed(cfg.acc_bits), signed(PRODUCT_BITS), signed(PRODUCT_BITS), signed(cfg.acc_bits)]

            def combine(depth, a, b):
                return (a[0] + b[0], Mux(greater(a[1], b[1]), a[1], b[1]), Mux(less(a[2], b[2]), a[2], b[2]), a[3] + b[3])

            root, root_valid = pipelined_tree(m, leaves, shapes, combine, 1, popped & p_split,
                                              names=("csum", "chi", "clo", "cbias"))
            # the record's tag and its layer travel alongside the tree
            tree_tag = Cat(t_popped, p_layer)
            for d in range(tree_latency(P)):
                nt = Signal.like(tree_tag, name=f"split_tag_{d}")
                m.d.sync += nt.eq(tree_tag)
                tree_tag = nt
            sc = rq_consts(tree_tag[len(t_popped):], "_split")
            s_mam, s_mult, s_shift, s_relu, s_n, s_even = (sc["mam"], sc["mult"], sc["shift"], sc["relu"], sc["n"],
                                                            sc["even"])
            rq_split = Requant(acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits, tag_bits=act_bits + log2p + 1,
                               clamps=clamps, family=self.family)
            m.submodules.rq_split = rq_split
            split_acc = Signal(signed(cfg.acc_bits))
            m.d.comb += split_acc.eq(Mux(s_mam, root[3] + root[1] + root[2], root[3] + root[0]))
            m.d.comb += [rq_split.i.valid.eq(root_valid), rq_split.i.payload.acc.eq(split_acc),
                         rq_split.i.payload.mult.eq(s_mult), rq_split.i.payload.shift.eq(s_shift),
                         rq_split.i.payload.relu.eq(s_relu), rq_split.i.payload.n.eq(s_n),
                         rq_split.i.payload.even.eq(s_even),
                         rq_split.i.payload.tag.eq(tree_tag[:len(t_popped)])]

        # ------------------------------------------------------------ writes of results
        # row-parallel results arrive in order, position by position, R rows each: counters give
        # each its word (mamfpga.compile.maps.OutGen); a fused max pool keeps the running max of the
        # window's results per row and writes it with the window's last. The write side's
        # constants are registers, loaded (from ``nxw``) as its layer's last result passes: the
        # counters' limits less 2 and whether each is 1 (no adder, no compare in front of the
        # updates: the chain r -> window -> position -> pos_word adder was the iCE40's critical path)
        wlayer = Signal(index_bits(K))
        g0 = gens[0]
        wspec = {
            "first": (act_bits, [g.first for g in gens]),
            "rows_m2": (index_bits(max(g.rows for g in gens) + 1), [max(g.rows - 2, 0) for g in gens]),
            "per_row_m2": (index_bits(max(g.per_row for g in gens) + 1), [max(g.per_row - 2, 0) for g in gens]),
            "window_m2": (index_bits(max(g.window for g in gens) + 1), [max(g.window - 2, 0) for g in gens]),
            "rows_1": (1, [int(g.rows == 1) for g in gens]), "per_row_1": (1, [int(g.per_row == 1) for g in gens]),
            "window_1": (1, [int(g.window == 1) for g in gens]),
            "pos_step": (act_bits, [g.rows for g in gens]), "row_step": (act_bits, [g.rows + g.skip for g in gens]),
            "rows_at": (bank_rows, [(1 << (g.rows - 1)) if g.rows <= bank_rows else 0 for g in gens]),
            "split_base": (act_bits + log2p, [int(p.out_address[0]) if p.split else 0 for p in plans]),
            "out_uns": (1, [int(p.act_max > 127) for p in plans]),
            "out_side": (1, [(k + 1) % 2 for k in range(K)]),
            "last_layer": (1, [int(k == K - 1) for k in range(K)]),
            "res_left": (res_bits, [n - 1 for n in n_results]), "res_last": (1, [int(n == 1) for n in n_results]),
        }
        cur = {name: Signal(shape, name=name, init=values[0]) for name, (shape, values) in wspec.items()}
        w_next = Signal.like(wlayer, init=1 % K)           # the layer after the write side's
        nxw = {name: table(w_next, shape, values, f"next_{name}") for name, (shape, values) in wspec.items()}
        row_out = Signal()
        m.d.comb += row_out.eq(rq_row[0].o.valid)
        res_data = Signal(8 * P)
        res_mask = Signal(P)
        res_addr = Signal(act_bits)
        res_en = Signal()
        g_rows = max(g.rows for g in gens)
        r_cnt = Signal(index_bits(g_rows + 1))
        j_cnt = Signal(index_bits(max(g.window for g in gens) + 1))
        x_cnt = Signal(index_bits(max(g.per_row for g in gens) + 1))
        pos_word = Signal(act_bits, init=g0.first)
        y_row = Cat(*[rq.o.payload.y for rq in rq_row])
        # whether each counter is at its last value, registers updated with it
        r_last, window_last = Signal(init=g0.rows == 1), Signal(init=g0.window == 1)
        x_last, j_first = Signal(init=g0.per_row == 1), Signal(init=1)
        pooled = any(g.window > 1 for g in gens)
        if pooled:
            # the running maxima rotate through a shift register as the rows come: the one at its
            # head is the row's now, the new one enters at the layer's R - 1 (no index decoding)
            bank = [Signal(8 * P, name=f"pool_max{r}") for r in range(bank_rows)]
            best = Signal(8 * P)
            for p in range(P):
                # bytes compared as the layer writes them: signed, or unsigned (act_max 255)
                y, h = y_row.word_select(p, 8), bank[0].word_select(p, 8)
                y, h = Mux(cur["out_uns"], y, y.as_signed()), Mux(cur["out_uns"], h, h.as_signed())
                m.d.comb += best.word_select(p, 8).eq(Mux(j_first | greater(y, h), y, h))
            with m.If(row_out):
                for r in range(bank_rows):
                    nxt = bank[r + 1] if r + 1 < bank_rows else best
                    m.d.sync += bank[r].eq(Mux(cur["rows_at"][r], best, nxt))
        else:
            best = y_row
        res_any = Signal()
        with m.If(row_out):
            m.d.comb += [res_any.eq(1), res_en.eq(window_last), res_addr.eq(pos_word + r_cnt), res_data.eq(best),
                         res_mask.eq((1 << P) - 1)]
            with m.If(~r_last):
                m.d.sync += [r_cnt.eq(r_cnt + 1), r_last.eq(r_cnt == cur["rows_m2"])]
            with m.Else():
                m.d.sync += [r_cnt.eq(0), r_last.eq(cur["rows_1"]), j_first.eq(window_last)]
                with m.If(~window_last):
                    m.d.sync += [j_cnt.eq(j_cnt + 1), window_last.eq(j_cnt == cur["window_m2"])]
                with m.Else():
                    m.d.sync += [j_cnt.eq(0), window_last.eq(cur["window_1"])]
                    with m.If(~x_last):
                        m.d.sync += [x_cnt.eq(x_cnt + 1), x_last.eq(x_cnt == cur["per_row_m2"]),
                                     pos_word.eq(pos_word + cur["pos_step"])]
                    with m.Else():
                        m.d.sync += [x_cnt.eq(0), x_last.eq(cur["per_row_1"]),
                                     pos_word.eq(pos_word + cur["row_step"])]
        if has_split:
            with m.Elif(rq_split.o.valid):
                r = Signal(act_bits + log2p)
                m.d.comb += r.eq(cur["split_base"] + rq_split.o.payload.tag)
                m.d.comb += [res_any.eq(1), res_en.eq(1), res_addr.eq(r >> log2p),
                             res_data.eq(Cat(*[rq_split.o.payload.y] * P)),
                             res_mask.eq(1 << (r[:log2p] if log2p else 0))]
        # the layer's last result: the write side moves to the next layer (after the counters'
        # updates above, so that these loads win)
        with m.If(res_any):
            with m.If(cur["res_last"]):
                m.d.sync += [wlayer.eq(w_next), w_next.eq(Mux(w_next == K - 1, 0, w_next + 1)),
                             r_cnt.eq(0), j_cnt.eq(0), x_cnt.eq(0),
                             pos_word.eq(nxw["first"]), r_last.eq(nxw["rows_1"]), x_last.eq(nxw["per_row_1"]),
                             window_last.eq(nxw["window_1"]), j_first.eq(1)]
                m.d.sync += [cur[name].eq(nxw[name]) for name in wspec]
            with m.Else():
                m.d.sync += [cur["res_left"].eq(cur["res_left"] - 1), cur["res_last"].eq(cur["res_left"] == 1)]
        # the write stage, registered: no requantizer output, pool compare or address adder shares
        # a cycle with the memories' write ports (one cycle a layer: LAYER_HANDOFF). The inputs'
        # writes enter it too (the sequencer's LOAD below), so the write ports of every PE's
        # activation memories are driven by these flip-flops alone: no state decode in front of
        # them (the sequencer's state into the write enables of the array was the ECP5 digits
        # design's critical path, 5.4 ns of routing)
        w_en, w_addr, w_data, w_mask = Signal(), Signal(act_bits), Signal(8 * P), Signal(P)
        # its layer (K: an input); the inference's last write
        w_layer, w_final = Signal(index_bits(K + 1)), Signal()
        # the output memory's byte enables, registered whole (the layer compare and the mask
        # behind its write decode were the iCE40's critical path of the CNN design)
        w_oaddr, w_omask = Signal(index_bits(out_words)), Signal(P)
        m.d.sync += [w_en.eq(res_en), w_addr.eq(Mux(cur["out_side"], half, 0) | res_addr), w_data.eq(res_data),
                     w_mask.eq(res_mask), w_oaddr.eq(res_addr - out_first),
                     w_omask.eq(Mux(res_en & cur["last_layer"], res_mask, 0)), w_layer.eq(wlayer),
                     w_final.eq(res_any & cur["res_last"] & cur["last_layer"])]
        m.d.comb += [o_wr.addr.eq(w_oaddr), o_wr.data.eq(w_data), o_wr.en.eq(w_omask)]

        # ------------------------------------------------------------ sequencer
        in_count = Signal(index_bits(n_in + 1))
        # the input's addresses (Program.input_address): C, H, W order into its map, the border skipped
        in_at = self._input_walk()
        in_addr = Signal(act_bits + log2p, init=in_at["first"])
        in_x, in_y = Signal(index_bits(in_at["w"])), Signal(index_bits(in_at["h"]))
        out_count = Signal(index_bits(m_out + 1))
        rom = Signal(index_bits(out_words * P + 1))
        with m.Switch(out_count):
            for r, a in enumerate(prog.output_address):
                with m.Case(r):
                    m.d.comb += rom.eq(int(a) - out_first * P)
        m.d.comb += o_rd.addr.eq(rom >> log2p)

        # the layer the PEs start next, stable a cycle and more before they do (they hold its
        # constants in registers): the next one from a layer's start on, 0 from the outputs on
        nxt_layer = Signal.like(layer)
        for pe in pes:
            m.d.comb += pe.layer.eq(nxt_layer)
        # layer k + 1 starts the compiled distance after layer k (LayerPlan.cycles_model, the
        # schedule of mamfpga.compile.schedule), and the outputs the last layer's distance after
        # it starts (they stream out as it writes them): a count down, its end a register
        gaps = [max(p.cycles_model - 2, 0) for p in plans]
        assert all(p.cycles_model >= 2 for p in plans), "a layer's next starts at least 2 cycles after it"
        gap_left = Signal(index_bits(max(gaps) + 1))
        gap_zero, started_last = Signal(), Signal()
        # the last layer's last write is done (the next inference's inputs wait for it)
        drained = Signal()
        with m.If(w_final):
            m.d.sync += drained.eq(1)
        m.d.comb += pop.eq(all_ready)
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), self.phase.eq(0)]
                with m.If(self.i.valid):
                    # the input enters the write stage (no layer writes while inputs load: the
                    # last inference's were drained), written a cycle later: the first layer
                    # reads its activations four cycles after its start at the earliest
                    m.d.sync += [w_en.eq(1), w_addr.eq(in_addr >> log2p),
                                 w_data.eq(Cat(*[self.i.payload] * P)),
                                 w_mask.eq(1 << (in_addr[:log2p] if log2p else 0)), w_layer.eq(K)]
                    m.d.sync += in_count.eq(in_count + 1)
                    with m.If(in_x != in_at["w"] - 1):
                        m.d.sync += [in_x.eq(in_x + 1), in_addr.eq(in_addr + 1)]
                    with m.Elif(in_y != in_at["h"] - 1):
                        m.d.sync += [in_x.eq(0), in_y.eq(in_y + 1), in_addr.eq(in_addr + 1 + in_at["row_skip"])]
                    with m.Else():
                        m.d.sync += [in_x.eq(0), in_y.eq(0),
                                     in_addr.eq(in_addr + 1 + in_at["row_skip"] + in_at["plane_skip"])]
                    with m.If(in_count == n_in - 1):
                        m.d.sync += [in_count.eq(0), layer.eq(0), in_x.eq(0), in_y.eq(0), in_addr.eq(in_at["first"])]
                        m.next = "START"
            with m.State("START"):
                m.d.comb += self.phase.eq(1)
                for pe in pes:
                    m.d.comb += pe.start.eq(1)
                gap = table(layer, len(gap_left), gaps, "gap")
                m.d.sync += [nxt_layer.eq(layer + 1), gap_left.eq(gap), gap_zero.eq(gap == 0),
                             started_last.eq(layer == K - 1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.phase.eq(1)
                m.d.sync += [gap_left.eq(gap_left - 1), gap_zero.eq(gap_left == 1)]
                with m.If(gap_zero):
                    with m.If(started_last):
                        m.d.sync += out_count.eq(0)
                        m.next = "OUT"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "START"
            with m.State("OUT"):
                # the last layer still writes: output r goes out after its value is written
                m.d.comb += self.phase.eq(2)
                m.d.sync += nxt_layer.eq(0)
                sel = rom[:log2p] if log2p else 0
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.eq(o_rd.data.word_select(sel, 8) if P > 1 else o_rd.data)]
                with m.If(self.o.ready):
                    m.d.sync += out_count.eq(out_count + 1)
                    with m.If(out_count == m_out - 1):
                        m.d.sync += out_count.eq(0)
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # every output sent; the last layer's last write (a padding row's, say) may be
                # still to come: the next inputs wait for it
                m.d.comb += self.phase.eq(2)
                with m.If(drained | w_final):
                    m.d.sync += drained.eq(0)
                    m.next = "LOAD"
        m.d.comb += [aw_en.eq(w_en), aw_addr.eq(w_addr), aw_data.eq(w_data), aw_mask.eq(w_mask)]
        m.d.comb += [self.busy.eq(~self.i.ready), self.layer.eq(layer), self.aw.en.eq(aw_en),
                     self.aw.addr.eq(aw_addr), self.aw.data.eq(aw_data), self.aw.mask.eq(aw_mask),
                     self.aw_layer.eq(w_layer)]
        return m
