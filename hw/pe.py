"""A processing element: L lanes over a compiled weight stream, MAC or MAM per layer.

It implements the PE of :mod:`mamfpga.compile.arch`. Per layer (``start`` with the
layer index) it reads its ``words`` weight words from ``w_base`` on, one per
cycle, and emits one result per row; a conv layer reads them again at each of its
positions, the first column of every row being the position's origin (the origin
generator of :class:`mamfpga.compile.maps.ConvGeometry`), with no bubble between positions:

    fetch -> word: decode L entries, each lane's column = its own sum of deltas (lane_column)
          -> register (addresses rotated to the banks) -> activation read (L banks, one copy)
          -> register -> bank and byte select
          -> multiply -> adder tree (MAC) or comparator tree (MAM)
          -> running sum / max-min per row -> at the end of the row: + bias

MAM ignores zero-weight lanes: each lane enters the comparator tree with a
valid bit and the tree's selects prefer valid operands (no multiplexer in
front of its comparisons), and a word with no valid lane leaves the row
untouched (it carries sentinels that lose every comparison). The running max
and min compare two flip-flops (in offset binary: a carry chain's carry out)
and that drives the accumulator's clock enable, with no multiplexer in the
loop; the row's results are copied from the accumulators a cycle after its
last word, the bias read meanwhile at the address of the row being
accumulated; each PE holds its constants for the next layer in registers.
The next layer may start while this one's words are still in the pipeline
(mamfpga.compile.schedule): the stages after the fetch take the constants they
read with their word (the side and the signedness, delayed), and the back end
(accumulators, bias, MAM or MAC) follows its own layer, moving on at the
layer's last row.
At the end of a MAM row, max and min include 0
when the row's zero-candidate bit is set (and are 0 when nothing was seen).
The pipeline never stalls; a result leaves :data:`LATENCY` + tree latency
cycles after its row's last word was fetched.

Activation memory: one copy, in L banks (bank = byte address mod L), each of rows of
B = max(1, P / L) int8 activations, both ping-pong sides (the top address bit), written
through ``aw`` (a word of P activations, byte enables) by the array: with P >= L the word's
byte j goes to bank j mod L, row ``aw.addr``; with P < L to bank (addr mod L/P) P + j, row
``addr >> log2(L/P)``. Lane k of a word reads address origin + k (mod L) only
(:func:`mamfpga.compile.arch.lane_column`), so the L lanes read L different banks: bank
(origin + k) mod L, a rotation by the origin's residue (fixed for a dense layer, changing
with the position for a conv whose origin steps are not multiples of L). P and L are powers
of two. With ``lane_copies`` (:class:`~mamfpga.compile.arch.ArchConfig`), memory k is lane k's
own copy, P activations a row, written whole, read at column >> log2(P) without rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import (PE_LATENCY, lane_tree_latency, PRODUCT_BITS, SHIFT_BITS, ArchConfig, act_side_words, bank_bytes,
                                   bias_bits, bias_bits_used, bias_word_fields, clog2, index_bits, pow2_at_least,
                                   rom_width, weight_word_fields, word_bits, low_word_fields, high_word_fields,
                                   low_word_bits, high_word_bits)
from mamfpga.compile.device import memory_style
from mamfpga.hw.adder_tree import AdderTree
from mamfpga.hw.compare import greater, less
from mamfpga.hw.dsp import ecp5_mult, sext18
from mamfpga.hw.maxmin_tree import MaxMinTree, maxmin_decide, maxmin_select
from mamfpga.hw.tree import tree_latency

__all__ = ["PE", "PELayer", "LATENCY", "pe_from_program", "act_depth_of", "act_addr_bits_of", "act_write_layout"]

#: Cycles from fetching a row's last word to its result, besides the tree's levels.
LATENCY = PE_LATENCY


@dataclass(frozen=True)
class PELayer:
    """What one PE needs to know about one layer (compile-time constants). A layer runs its
    ``rows`` (words ``words``) at each of ``positions`` positions; a dense layer has one."""
    w_base: int
    words: int         # per position
    b_base: int
    rows: int          # per position
    mode: str          # "mac" | "mam"
    origin: int        # column of the first position: a conv's input region, a split PE's range start, or 0
    side: int          # ping-pong side the layer reads (0 or 1)
    positions: int = 1
    window: tuple = (1, 1)       # the fused pool's window (ph, pw): positions walked within it
    out_w: int = 1               # pooled outputs per map row
    steps: tuple = (0, 0, 0, 0)  # origin increments: window x, window y, pooled x, pooled y
    unsigned: bool = False       # it reads unsigned bytes (0..255), not int8
    wide: bool = False           # its weights' upper bits come from the extension memory


class PE(wiring.Component):
    def __init__(self, cfg: ArchConfig, *, weights: list[int], biases: list[int], layers: list[PELayer],
                 act_depth: int, family: str | None = None, scales: bool = False, high: list[int] | None = None):
        if not layers:
            raise ValueError("a PE needs at least one layer")
        self.cfg = cfg
        # at least two words each, so that every address has a bit (a one-word memory has none)
        self.weights = (list(weights) + [0, 0])[:max(2, len(weights))]
        self.biases = (list(biases) + [0, 0])[:max(2, len(biases))]
        #: the extension memory (``cfg.low_bits``): the wide layers' upper weight bits, from address 0
        self.high = (list(high or []) + [0, 0])[:max(2, len(high or []))] if cfg.low_bits else None
        self.layers = list(layers)
        # one ping-pong side, in words of P: a power of two, at least a row of every bank
        self.act_depth = max(pow2_at_least(act_depth), 1 if cfg.lane_copies else cfg.lanes // cfg.pes)
        self.family = family                             # memories marked block RAM or logic for it
        self.scales = scales                             # bias words carry each row's mult and shift
        self.act_addr_bits = index_bits(2 * self.act_depth)
        self.tree_latency = lane_tree_latency(cfg)
        #: the reductions this PE builds: only those its layers use
        self.modes = frozenset(l.mode for l in self.layers)
        super().__init__({
            "start": In(1),
            "layer": In(index_bits(len(layers))),
            "aw": In(act_write_layout(cfg.pes, self.act_addr_bits)),
            "res": Out(stream.Signature(data.StructLayout({
                "acc": signed(cfg.acc_bits), "sum": signed(cfg.acc_bits), "bias": signed(cfg.acc_bits),
                "hi": signed(PRODUCT_BITS), "lo": signed(PRODUCT_BITS), "mult": unsigned(cfg.mult_bits),
                "shift": unsigned(SHIFT_BITS)}), always_ready=True)),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        return LATENCY + self.tree_latency

    def _half_trees(self, m, prods, nz, valid, share, word_sum, wmax, wmin, v_out, any_out):
        """The lane trees where rows share words: a tree over each half of the lanes, and their
        root level here, as many stages as the whole trees' (the latency is the same). A word's
        upper half joins its row unless the word shares it (``share``): then the root passes it
        on, registered, as the next word's carry (returned: sum, max, min, any), which the
        caller adds to that word (the next row's first). Drives the word's ``word_sum`` (MAC),
        ``wmax``, ``wmin`` and ``any_out`` (MAM) and ``v_out``."""
        cfg = self.cfg
        L, h, stages = cfg.lanes, cfg.lanes // 2, cfg.tree_stages
        below = tree_latency(h, stages)                       # the half trees' levels
        sh = _delay(m, (share,), below, "share_t")[0]           # the share bit at the root
        v_root = Signal()
        c_sum = Signal(signed(PRODUCT_BITS + clog2(L)))
        c_max, c_min, c_any = Signal(signed(PRODUCT_BITS)), Signal(signed(PRODUCT_BITS)), Signal()
        if "mac" in self.modes:
            halves = []
            for i, part in enumerate((prods[:h], prods[h:])):
                t = AdderTree(width=PRODUCT_BITS, lanes=h, stages_per_level=stages)
                m.submodules[f"add_{'lo' if i == 0 else 'hi'}"] = t
                m.d.comb += [t.i.valid.eq(valid), t.o.ready.eq(1)]
                for k, pr in enumerate(part):
                    m.d.comb += t.i.payload[k].eq(pr)
                halves.append(t)
            lo, hi = halves[0].o.payload, halves[1].o.payload
            full = _delay(m, (lo + Mux(sh, 0, hi), Mux(sh, hi, 0)), stages, "add_root")
            m.d.comb += [word_sum.eq(full[0]), c_sum.eq(full[1])]
            m.d.comb += v_root.eq(halves[0].o.valid)
        if "mam" in self.modes:
            halves = []
            for i, (part, ok) in enumerate(((prods[:h], nz[:h]), (prods[h:], nz[h:]))):
                t = MaxMinTree(width=PRODUCT_BITS, lanes=h, registered_compare=stages == 2)
                m.submodules[f"mm_{'lo' if i == 0 else 'hi'}"] = t
                m.d.comb += [t.i.valid.eq(valid), t.o.ready.eq(1), t.lane_valid.eq(Cat(*ok))]
                for k, pr in enumerate(part):
                    m.d.comb += t.i.payload[k].eq(pr)
                halves.append(t)
            lo, hi = halves[0].o.payload, halves[1].o.payload
            depth = clog2(L) - 1                               # the root's level in a whole tree
            a = (lo.max, lo.min, lo.any)
            b = (hi.max, hi.min, hi.any & ~sh)
            if stages == 2:                                    # comparisons registered, then selects
                d = _delay(m, maxmin_decide(depth, a, b), 1, "mm_root_c")
                a2, b2 = _delay(m, a, 1, "mm_root_a"), _delay(m, b, 1, "mm_root_b")
                node = _delay(m, maxmin_select(depth, a2, b2, d), 1, "mm_root")
            else:
                node = _delay(m, maxmin_select(depth, a, b, maxmin_decide(depth, a, b)), 1, "mm_root")
            carried = _delay(m, (hi.max, hi.min, hi.any & sh), stages, "mm_carry")
            m.d.comb += [wmax.eq(node[0]), wmin.eq(node[1]), any_out.eq(node[2]),
                         c_max.eq(carried[0]), c_min.eq(carried[1]), c_any.eq(carried[2])]
            m.d.comb += v_root.eq(halves[0].o.valid)
        m.d.comb += v_out.eq(_delay(m, (v_root,), stages, "v_root")[0])
        # the carry for the next word: the root's upper half of a shared word, held while the
        # pipeline is empty (a shared word's next row follows it at once)
        regs = (Signal.like(c_sum, name="carry_sum"), Signal.like(c_max, name="carry_max"),
                Signal.like(c_min, name="carry_min"), Signal(name="carry_any"))
        with m.If(v_out):
            m.d.sync += [r.eq(v) for r, v in zip(regs, (c_sum, c_max, c_min, c_any))]
        return regs

    def _load_at_start(self, m, loads):
        """At ``start``, each register takes its value for the layer: from a register that holds
        it for ``layer`` (set every cycle), so the layer multiplexers and their fan-out across the
        array take a cycle of their own. ``layer`` is the next layer to start: stable at least one
        cycle before ``start`` (the accelerator sets it when the previous layer starts)."""
        pre = {}
        for reg, values in loads:
            values = tuple(int(v) for v in values)
            if len(set(values)) == 1:              # the same for every layer: a constant
                with m.If(self.start):
                    m.d.sync += reg.eq(values[0])
                continue
            if values not in pre:
                width = max(len(reg), max(abs(v) for v in values).bit_length() + 1)
                p = pre[values] = Signal(width, name=f"pre_{reg.name}")
                with m.Switch(self.layer):
                    for k, v in enumerate(values):
                        with m.Case(k):
                            m.d.sync += p.eq(v)
            with m.If(self.start):
                m.d.sync += reg.eq(pre[values])

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L, P = cfg.lanes, cfg.pes

        # ---------------------------------------------------------------- memories
        # each memory marked block RAM or logic as the compiler counted it (mamfpga.compile.device)
        fam = self.family
        wb, bb = low_word_bits(cfg), bias_bits_used(cfg, self.modes, self.scales)
        m.submodules.wmem = wmem = Memory(shape=unsigned(wb), depth=len(self.weights), init=self.weights,
                                          attrs=memory_style(rom_width(self.weights, (1 << wb) - 1),
                                                             len(self.weights), fam, rom=True))
        m.submodules.bmem = bmem = Memory(shape=unsigned(bias_bits(cfg, self.scales)), depth=len(self.biases),
                                          init=self.biases,
                                          attrs=memory_style(rom_width(self.biases, bb),
                                                             len(self.biases), fam, rom=True))
        w_rd = wmem.read_port()
        if self.high is not None:
            hb = high_word_bits(cfg)
            m.submodules.hmem = hmem = Memory(shape=unsigned(hb), depth=len(self.high), init=self.high,
                                              attrs=memory_style(rom_width(self.high, (1 << hb) - 1),
                                                                 len(self.high), fam, rom=True))
            h_rd = hmem.read_port()
        b_rd = bmem.read_port()
        # the activation banks: bank b holds the bytes whose address is b mod L, B to a row; with
        # lane copies, memory b is lane b's own copy (P to a row), read without rotation
        copies = cfg.lane_copies
        rotate = L > 1 and not copies
        B = P if copies else bank_bytes(cfg)
        log2l, log2b = (0 if copies else clog2(L)), clog2(B)
        bank_depth = 2 * self.act_depth * P // (P if copies else L * B)
        act_rd = []
        aw_bytes = [self.aw.data.word_select(j, 8) for j in range(P)]
        for b in range(L):
            # a value is read a cycle after its write at the earliest (mamfpga.compile.schedule)
            mem = Memory(shape=unsigned(8 * B), depth=bank_depth, init=[],
                         attrs=memory_style(8 * B, bank_depth, fam, rom=False, write_enables=B,
                                            collisions_unused=True))
            m.submodules[f"act{b}"] = mem
            wr = mem.write_port(granularity=8)
            if copies:                             # the whole word, into every lane's copy
                m.d.comb += [wr.addr.eq(self.aw.addr), wr.data.eq(self.aw.data),
                             wr.en.eq(Mux(self.aw.en, self.aw.mask, 0))]
            elif P >= L:                             # bytes b, b + L, ... of the word, in row addr
                m.d.comb += [wr.addr.eq(self.aw.addr), wr.data.eq(Cat(*aw_bytes[b::L])),
                             wr.en.eq(Mux(self.aw.en, Cat(*[self.aw.mask[j] for j in range(b, P, L)]), 0))]
            else:                                  # byte b mod P of the words at addr = b // P (mod L/P)
                g = clog2(L // P)
                j = b % P
                m.d.comb += [wr.addr.eq(self.aw.addr >> g), wr.data.eq(aw_bytes[j]),
                             wr.en.eq(self.aw.en & self.aw.mask[j] & (self.aw.addr[:g] == b // P))]
            # read as a combinational port and registered below (the register without a reset):
            # yosys folds the register into the port, as the block RAM's read, and takes
            # ``no_rw_check`` there, so it builds no old-value logic around the block (a read
            # port that is already synchronous keeps that logic, whatever the mark says)
            act_rd.append(mem.read_port(domain="comb"))

        # ---------------------------------------------------------------- layer registers
        lays = self.layers
        w_addr = Signal(index_bits(len(self.weights) + 1))
        w_base = Signal.like(w_addr)
        w_words = Signal(index_bits(max(l.words for l in lays) + 1))
        w_left = Signal.like(w_words)
        origin = Signal(index_bits(2 * self.act_depth * P + 1))
        # the constants of the layer being fetched: each stage after the fetch reads them delayed
        # with its word (the next layer may start while this one's words are in the pipeline)
        side = Signal()
        uns = Signal()                             # the layer reads unsigned bytes
        wide = Signal()                            # its weights' upper bits are in the extension memory
        pos_left = Signal(index_bits(max(l.positions for l in lays) + 1))
        # the conv origin generator (mamfpga.compile.maps.ConvGeometry.origins): counters over the
        # pool window (dx, dy) and the pooled row (px); the origins of the current pooled row,
        # pooled position and window row
        conv = any(l.positions > 1 for l in lays)
        dx, dy = Signal(index_bits(max(l.window[1] for l in lays))), Signal(index_bits(max(l.window[0] for l in lays)))
        px = Signal(index_bits(max(l.out_w for l in lays)))
        dx_end, dy_end, px_end = Signal.like(dx), Signal.like(dy), Signal.like(px)
        st = [Signal.like(origin, name=f"step_{n}") for n in ("x", "y", "px", "py")]
        o_py, o_px, o_dy = Signal.like(origin), Signal.like(origin), Signal.like(origin)
        loads = [(w_addr, [l.w_base for l in lays]), (w_base, [l.w_base for l in lays]),
                 (w_words, [l.words for l in lays]), (w_left, [l.words for l in lays]),
                 (origin, [l.origin for l in lays]),
                 (side, [l.side for l in lays]), (uns, [int(l.unsigned) for l in lays]),
                 (pos_left, [l.positions for l in lays]), (wide, [int(l.wide) for l in lays])]
        if conv:
            loads += [(o_py, [l.origin for l in lays]), (o_px, [l.origin for l in lays]),
                      (o_dy, [l.origin for l in lays]), (dx, [0] * len(lays)), (dy, [0] * len(lays)),
                      (px, [0] * len(lays)), (dx_end, [l.window[1] - 1 for l in lays]),
                      (dy_end, [l.window[0] - 1 for l in lays]), (px_end, [l.out_w - 1 for l in lays])]
            loads += [(s_, [l.steps[i] for l in lays]) for i, s_ in enumerate(st)]
        # the fetch's own state as registers updated with its counters (no compare of a counter in
        # front of the fetch's enables: w_left -> compares -> w_addr was the iCE40's critical path
        # of the CNN design): words are left; the word fetched is the position's last; positions
        # are left after this one
        fetching, w_one, pos_more, words_one = Signal(), Signal(), Signal(), Signal()
        loads += [(fetching, [int(l.words != 0) for l in lays]), (w_one, [int(l.words == 1) for l in lays]),
                  (words_one, [int(l.words == 1) for l in lays]), (pos_more, [int(l.positions > 1) for l in lays])]
        self._load_at_start(m, loads)
        m.d.comb += w_rd.addr.eq(w_addr)
        if self.high is not None:
            # the wide layers come first, so their addresses are the extension memory's (a narrow
            # layer's read of it, past its end, is not used)
            m.d.comb += h_rd.addr.eq(w_addr[:len(h_rd.addr)])
        with m.If(fetching & ~self.start):
            with m.If(w_one & pos_more if conv else 0):
                # the position's last word: read the layer's words again, at the next position
                m.d.sync += [w_addr.eq(w_base), w_left.eq(w_words), w_one.eq(words_one),
                             pos_left.eq(pos_left - 1), pos_more.eq(pos_left > 2)]
                if conv:
                    with m.If(dx != dx_end):
                        m.d.sync += [dx.eq(dx + 1), origin.eq(origin + st[0])]
                    with m.Elif(dy != dy_end):
                        m.d.sync += [dx.eq(0), dy.eq(dy + 1), o_dy.eq(o_dy + st[1]), origin.eq(o_dy + st[1])]
                    with m.Elif(px != px_end):
                        m.d.sync += [dx.eq(0), dy.eq(0), px.eq(px + 1), o_px.eq(o_px + st[2]),
                                     o_dy.eq(o_px + st[2]), origin.eq(o_px + st[2])]
                    with m.Else():
                        m.d.sync += [dx.eq(0), dy.eq(0), px.eq(0), o_py.eq(o_py + st[3]), o_px.eq(o_py + st[3]),
                                     o_dy.eq(o_py + st[3]), origin.eq(o_py + st[3])]
            with m.Else():
                m.d.sync += [w_addr.eq(w_addr + 1), w_left.eq(w_left - 1), w_one.eq(w_left == 2),
                             fetching.eq(~w_one)]
        # the origin travels with the word it was fetched for (read, then registered: two cycles)
        org_a, org_b = Signal.like(origin), Signal.like(origin)
        m.d.sync += [org_a.eq(origin), org_b.eq(org_a)]

        # ---------------------------------------------------------------- S1: decode
        # the weight word is registered as it leaves the block RAM (its clock-to-out is long)
        v1a, v1 = Signal(), Signal()
        # the registers a block RAM's read enters have no reset on the ECP5: the block's output
        # register takes them there (mamfpga.boards.netlist), and it has none of theirs
        ecp5 = self.family == "ecp5"
        word = Signal(word_bits(cfg), reset_less=ecp5)
        if self.high is None:
            m.d.sync += [v1a.eq(fetching & ~self.start), v1.eq(v1a), word.eq(w_rd.data)]
        else:
            # the word as weight_word_fields lays it out: each weight's low bits, and above them the
            # extension memory's bits (a wide layer) or the low bits' sign (a narrow one)
            lo_f = data.View(word_layout(low_word_fields(cfg)), w_rd.data)
            hi_f = data.View(word_layout(high_word_fields(cfg)), h_rd.data)
            full = data.View(word_layout(weight_word_fields(cfg)), word)
            hb = cfg.weight_bits - cfg.low_bits
            m.d.sync += [v1a.eq(fetching & ~self.start), v1.eq(v1a), full.eor.eq(lo_f.eor)]
            for k in range(L):
                lw = lo_f[f"weight{k}"]
                m.d.sync += [full[f"delta{k}"].eq(lo_f[f"delta{k}"]),
                             full[f"weight{k}"].eq(Cat(lw, Mux(wide, hi_f[f"high{k}"], lw[-1].replicate(hb))))]
        fields = data.View(word_layout(weight_word_fields(cfg)), word)
        deltas = [fields[f"delta{k}"] for k in range(L)]
        wts = [fields[f"weight{k}"] for k in range(L)]
        eor = fields.eor
        # rows sharing words (cfg.packs): the word's upper half of lanes starts the next row
        packs = cfg.packs
        share = fields.share if packs else None
        # each lane's column, in units of L (its bank row times B plus its byte): the row's
        # origin + k, shifted, at a row's start, then the lane's own running sum (lane_column)
        row_start = Signal(init=1)                 # the next word starts a row
        qw = len(origin) - log2l if len(origin) > log2l else 1
        ob = [Signal(qw, name=f"ob{k}") for k in range(L)]        # (origin + k) >> log2(L), with org_b
        rot_b = Signal(max(1, log2l))                              # origin mod L, with org_b
        m.d.sync += [o.eq((org_a + (0 if copies else k)) >> log2l) for k, o in enumerate(ob)]
        m.d.sync += rot_b.eq(org_a[:log2l] if log2l else 0)
        lane_q = [Signal(qw, name=f"q{k}") for k in range(L)]
        # where a lane starts a row (mamfpga.compile.arch.lane_rows): the lower half at a row's
        # start; with shared words the upper half where the word shares, or at a row's start that
        # the word before did not share (the upper half started the row a word earlier)
        shared_last = Signal()                     # the word before shared its upper half
        upper_start = (share | (row_start & ~shared_last)) if packs else row_start
        cols = []
        for k in range(L):
            c = Signal(qw, name=f"col{k}")
            m.d.comb += c.eq(Mux(upper_start if k >= L // 2 else row_start, ob[k], lane_q[k]) + deltas[k])
            cols.append(c)
        with m.If(v1):
            m.d.sync += [q.eq(c) for q, c in zip(lane_q, cols)]
            m.d.sync += row_start.eq(eor)
            if packs:
                m.d.sync += shared_last.eq(share)

        # ---------------------------------------------------------------- S1b: register the decode
        # (the column adders and the activation memories' address setup in separate cycles): bank
        # b's row from lane (b - origin) mod L, each lane's byte within its bank row
        v1b, eor1b, sh1b = Signal(), Signal(), Signal()
        w1b = [Signal(signed(8), name=f"w1b_{k}") for k in range(L)]
        rows_b = [Signal(qw - log2b if qw > log2b else 1, name=f"bank_row_b{b}") for b in range(L)]
        sel_b = [Signal(max(1, log2b), name=f"sel_b{k}") for k in range(L)]
        rot1b = Signal.like(rot_b)
        m.d.sync += [v1b.eq(v1), eor1b.eq(eor), rot1b.eq(rot_b), sh1b.eq(share if packs else 0)]
        cols_arr = Array(cols)
        for k in range(L):
            m.d.sync += [w1b[k].eq(wts[k]), sel_b[k].eq(cols[k][:log2b] if log2b else 0)]
        for b in range(L):
            src = Signal(qw, name=f"bank_col{b}")
            m.d.comb += src.eq(cols_arr[(b - rot_b)[:log2l]] if rotate else cols[b])
            m.d.sync += rows_b[b].eq(src >> log2b)

        # ---------------------------------------------------------------- S2: activation read
        # the side and the signedness of the word's layer, delayed from the fetch (S0) to the
        # activation address (S1b) and the byte select (S2b)
        def delayed(sig, n, name):
            for d in range(n):
                nxt = Signal.like(sig, name=f"{name}_d{d + 1}")
                m.d.sync += nxt.eq(sig)
                sig = nxt
            return sig

        side_s1b, uns_s2b = delayed(side, 3, "side"), delayed(uns, 5, "uns")
        v2, eor2, sh2 = Signal(), Signal(), Signal()
        w2 = [Signal(signed(8), name=f"w2_{k}") for k in range(L)]
        sel2 = [Signal.like(sel_b[k], name=f"sel2_{k}") for k in range(L)]
        rot2 = Signal.like(rot_b)
        m.d.sync += [v2.eq(v1b), eor2.eq(eor1b), rot2.eq(rot1b), sh2.eq(sh1b)]
        for k in range(L):
            m.d.sync += [w2[k].eq(w1b[k]), sel2[k].eq(sel_b[k])]
        for b in range(L):
            m.d.comb += act_rd[b].addr.eq((side_s1b.as_unsigned() << (len(act_rd[b].addr) - 1)) | rows_b[b])
        # the side is the top address bit (act_depth is a power of two)

        # ---------------------------------------------------------------- S2b, S2c: the read word
        # registered as it leaves the block RAM, then the lane's byte selected and registered, so
        # that neither the RAM's clock-to-out nor the byte select shares a cycle with the multiply
        v2b, eor2b, v2c, eor2c, sh2b, sh2c = Signal(), Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.sync += [v2b.eq(v2), eor2b.eq(eor2), v2c.eq(v2b), eor2c.eq(eor2b), sh2b.eq(sh2), sh2c.eq(sh2b)]
        a2b = [Signal(8 * B, name=f"a2b_{b}", reset_less=ecp5) for b in range(L)]
        rot2b = Signal.like(rot_b)
        act_q = [Signal(8 * B, name=f"act_q{b}", reset_less=True) for b in range(L)]     # the block RAM's read
        m.d.sync += [q.eq(act_rd[b].data) for b, q in enumerate(act_q)]
        m.d.sync += [a.eq(q) for q, a in zip(act_q, a2b)]
        m.d.sync += rot2b.eq(rot2)
        a2b_arr = Array(a2b)
        w2c = []
        x2c = []
        x2b = []                                   # the operands a cycle earlier, unregistered
        for k in range(L):
            w2b, sel2b = Signal(signed(8), name=f"w2b_{k}"), Signal.like(sel2[k], name=f"sel2b_{k}")
            # the byte as a 9-bit value: sign-extended (int8) or zero-extended (unsigned bytes)
            x, w = Signal(signed(9), name=f"x2c_{k}"), Signal(signed(8), name=f"w2c_{k}")
            bank = Signal(8 * B, name=f"bank2b_{k}")
            m.d.comb += bank.eq(a2b_arr[(rot2b + k)[:log2l]] if rotate else a2b[k])
            byte = bank.word_select(sel2b, 8) if B > 1 else bank
            m.d.sync += [w2b.eq(w2[k]), sel2b.eq(sel2[k]), x.eq(Cat(byte, byte[7] & ~uns_s2b)), w.eq(w2b)]
            x2c.append(x)
            w2c.append(w)
            x2b.append((Cat(byte, byte[7] & ~uns_s2b).as_signed(), w2b))

        # ---------------------------------------------------------------- S3: multiply
        prods = [Signal(signed(PRODUCT_BITS), name=f"p3_{k}") for k in range(L)]
        nz4 = [Signal(name=f"nz3_{k}") for k in range(L)]
        v4, eor4, sh4 = Signal(), Signal(), Signal()
        m.d.sync += [v4.eq(v2c), eor4.eq(eor2c), sh4.eq(sh2c)]
        for k in range(L):
            m.d.sync += nz4[k].eq(w2c[k] != 0)
            if platform is not None and self.family == "ecp5":
                # a MULT18X18D whose input registers are S2c's (mamfpga.hw.dsp: yosys would leave
                # them in logic), the product registered in logic as before: the block's output
                # register would leave the route from the block to the trees in the next cycle
                x, w = x2b[k]
                m.d.sync += prods[k].eq(ecp5_mult(m, f"mul{k}", sext18(x), sext18(w), in_reg=True,
                                                             out_reg=False)[:PRODUCT_BITS])
            else:
                m.d.sync += prods[k].eq(w2c[k] * x2c[k])

        # ---------------------------------------------------------------- S4: trees
        word_sum = Signal(signed(PRODUCT_BITS + clog2(L)))
        wmax, wmin = Signal(signed(PRODUCT_BITS)), Signal(signed(PRODUCT_BITS))
        v5 = Signal()
        # whether any lane of the word is valid (a MAM word with none leaves the row untouched):
        # the comparator tree's own ``any`` (only MAM reads it)
        wv5 = Signal()
        if not packs:
            if "mac" in self.modes:
                m.submodules.add = add = AdderTree(width=PRODUCT_BITS, lanes=L, stages_per_level=cfg.tree_stages)
                m.d.comb += [add.i.valid.eq(v4), add.o.ready.eq(1), word_sum.eq(add.o.payload), v5.eq(add.o.valid)]
                for k in range(L):
                    m.d.comb += add.i.payload[k].eq(prods[k])
            if "mam" in self.modes:
                # a zero-weight lane takes no part in the comparisons (the tree prefers valid lanes)
                m.submodules.mm = mm = MaxMinTree(width=PRODUCT_BITS, lanes=L,
                                                  registered_compare=cfg.tree_stages == 2)
                m.d.comb += [mm.i.valid.eq(v4), mm.o.ready.eq(1), wmax.eq(mm.o.payload.max),
                             wmin.eq(mm.o.payload.min), v5.eq(mm.o.valid), wv5.eq(mm.o.payload.any),
                             mm.lane_valid.eq(Cat(*nz4))]
                for k in range(L):
                    m.d.comb += mm.i.payload[k].eq(prods[k])
        else:
            carry = self._half_trees(m, prods, nz4, v4, sh4, word_sum, wmax, wmin, v5, wv5)
        # the end of row travels alongside the trees
        eor5 = eor4
        for d in range(self.tree_latency):
            e = Signal(name=f"eor_t{d}")
            m.d.sync += e.eq(eor5)
            eor5 = e

        # ---------------------------------------------------------------- S4b: register the word's
        # sum / max / min, so the running accumulators' loops start and end at flip-flops
        r_ws = Signal.like(word_sum)
        r_v5, r_eor5, r_wv5 = Signal(), Signal(), Signal()
        # a word with no valid lane carries sentinels that lose every comparison (products of an
        # int8 weight and an activation in [-128, 255] lie in [-32385, 32385], inside the 16-bit
        # range's ends)
        hi_sent, lo_sent = -(1 << (PRODUCT_BITS - 1)), (1 << (PRODUCT_BITS - 1)) - 1
        # max and min are kept in offset binary (the sign bit flipped) from here to the end of the
        # row, so that their comparisons are unsigned: the carry chain's carry out, no sign fix-up
        # after it
        flip = 1 << (PRODUCT_BITS - 1)
        r_wmax, r_wmin = Signal(PRODUCT_BITS), Signal(PRODUCT_BITS)
        if packs:
            # the upper half a shared word carried for this row (zero / no candidate otherwise)
            # joins the word: its row's first word after the shared one
            c_sum, c_max, c_min, c_any = carry
            take_max = c_any & (~wv5 | greater(c_max, wmax))
            take_min = c_any & (~wv5 | less(c_min, wmin))
            word_sum, wmax, wmin, wv5 = (word_sum + c_sum)[:len(word_sum)].as_signed(), \
                Mux(take_max, c_max, wmax), Mux(take_min, c_min, wmin), wv5 | c_any
        m.d.sync += [r_ws.eq(word_sum), r_wmax.eq(Mux(wv5, wmax, hi_sent) ^ flip),
                     r_wmin.eq(Mux(wv5, wmin, lo_sent) ^ flip), r_v5.eq(v5), r_eor5.eq(eor5), r_wv5.eq(wv5)]
        word_sum, wmax, wmin, v5, eor5, wv5 = r_ws, r_wmax, r_wmin, r_v5, r_eor5, r_wv5

        # ---------------------------------------------------------------- S5: accumulate
        # the sum: an adder (a carry chain) and a register. The max and the min: a compare of two
        # flip-flops (a carry chain) drives the accumulator's clock enable, its data the word's
        # value: one LUT after the carry chain, no multiplexer in the loop
        acc_sum = Signal(signed(cfg.acc_bits))
        # offset binary; without a reset (a row's first word sets them), so that the clock enable
        # is not ORed with the reset (iCE40 SB_DFFESR resets only when enabled)
        hi, lo = Signal(PRODUCT_BITS, reset_less=True), Signal(PRODUCT_BITS, reset_less=True)
        seen = Signal()
        row_first = Signal(init=1)
        new_sum = Signal(signed(cfg.acc_bits))
        new_seen = Signal()
        take_hi, take_lo = Signal(), Signal()
        m.d.comb += [
            new_sum.eq(Mux(row_first, 0, acc_sum) + word_sum),
            new_seen.eq((seen & ~row_first) | wv5),
            take_hi.eq(row_first | greater(wmax, hi)),
            take_lo.eq(row_first | less(wmin, lo)),
        ]
        with m.If(v5):
            m.d.sync += [acc_sum.eq(new_sum), seen.eq(new_seen), row_first.eq(eor5)]
            with m.If(take_hi):
                m.d.sync += hi.eq(wmax)
            with m.If(take_lo):
                m.d.sync += lo.eq(wmin)
        # the row ends: its results are the accumulators' values in the next cycle (S5b; the
        # next row's first word overwrites them at its end), copied then (S5c)
        row_done = Signal()
        m.d.sync += row_done.eq(v5 & eor5)
        # the bias memory is read at the address of the row being accumulated: the address
        # advances as a row's last word is accumulated (S5), so the row's bias leaves the block RAM
        # in S5b even when the row has one word, and is registered with the row's results (S5c).
        # The address counts through the position's rows and back to the layer's base; ``b_last``
        # (a register, no comparator in front of the counter) says the row is the position's last.
        # This back end follows its own layer (``blayer``): it moves to the next at the layer's
        # last row (``be_last``, from a count of the layer's rows at all positions), whatever
        # the fetch has started meanwhile, loading the next layer's constants (``nb_*``, case
        # tables on its layer index)
        K = len(lays)
        nxt = [lays[(k + 1) % K] for k in range(K)]
        b_base = Signal(index_bits(len(self.biases) + 1), init=lays[0].b_base)
        rows_m1 = Signal(index_bits(max(l.rows for l in lays) + 1), init=lays[0].rows - 1)   # rows per position - 1
        total = [l.rows * l.positions for l in lays]
        be_left = Signal(index_bits(max(total) + 1), init=total[0] - 1)      # rows after this one
        be_last = Signal(init=total[0] == 1)
        mam_b = Signal(init=lays[0].mode == "mam")                           # the back end's layer is MAM
        blayer = Signal(index_bits(K), init=0)
        b_addr, b_left = Signal.like(b_base, init=lays[0].b_base), Signal.like(rows_m1, init=lays[0].rows - 1)
        b_last = Signal(init=lays[0].rows == 1)
        nb_base, nb_rows_m1 = Signal.like(b_base), Signal.like(rows_m1)
        nb_left, nb_last, nb_rows1, nb_mam = Signal.like(be_left), Signal(), Signal(), Signal()
        with m.Switch(blayer):
            for k in range(K):
                with m.Case(k):
                    n = nxt[k]
                    m.d.comb += [nb_base.eq(n.b_base), nb_rows_m1.eq(n.rows - 1), nb_rows1.eq(n.rows == 1),
                                 nb_left.eq(n.rows * n.positions - 1), nb_last.eq(n.rows * n.positions == 1),
                                 nb_mam.eq(n.mode == "mam")]
        m.d.comb += b_rd.addr.eq(b_addr)
        with m.If(v5 & eor5):
            with m.If(be_last):
                m.d.sync += [b_addr.eq(nb_base), b_base.eq(nb_base), b_left.eq(nb_rows_m1), b_last.eq(nb_rows1),
                             rows_m1.eq(nb_rows_m1), be_left.eq(nb_left), be_last.eq(nb_last), mam_b.eq(nb_mam),
                             blayer.eq(Mux(blayer == K - 1, 0, blayer + 1))]
            with m.Else():
                m.d.sync += [be_left.eq(be_left - 1), be_last.eq(be_left == 1)]
                with m.If(b_last):
                    m.d.sync += [b_addr.eq(b_base), b_left.eq(rows_m1), b_last.eq(rows_m1 == 0)]
                with m.Else():
                    m.d.sync += [b_addr.eq(b_addr + 1), b_left.eq(b_left - 1), b_last.eq(b_left == 1)]
        # results still to come: the rows of the layers started, less those done
        rows_left = Signal(index_bits(2 * max(total) + 1))
        pre_rows = Signal.like(rows_left)
        with m.Switch(self.layer):
            for k in range(K):
                with m.Case(k):
                    m.d.sync += pre_rows.eq(total[k])
        m.d.sync += rows_left.eq(rows_left + Mux(self.start, pre_rows, 0) - row_done)
        # the row's mode, with its results: the back end may have moved to the next layer
        mam5, r_mam, z_mam = Signal(), Signal(), Signal()
        m.d.sync += [mam5.eq(mam_b), r_mam.eq(mam5), z_mam.eq(r_mam)]
        r_sum, r_seen, v6 = Signal(signed(cfg.acc_bits)), Signal(), Signal()
        r_hi, r_lo = Signal(signed(PRODUCT_BITS)), Signal(signed(PRODUCT_BITS))
        bias_word = Signal.like(b_rd.data, reset_less=ecp5)
        m.d.sync += [r_sum.eq(acc_sum), r_seen.eq(seen), v6.eq(row_done), bias_word.eq(b_rd.data),
                     r_hi.eq((hi ^ flip).as_signed()), r_lo.eq((lo ^ flip).as_signed())]

        # ---------------------------------------------------------------- S6: zero candidate, bias
        bias_fields = data.View(word_layout(bias_word_fields(cfg, self.scales)), bias_word)
        bias, zc = bias_fields.bias, bias_fields.zero_candidate
        # S6a: the zero candidate; S6b: max + min (MAM) or the sum (MAC); then the bias added
        # (each a cycle: the zero-candidate bit's fan-out and an adder's carry chain apart)
        z_hi, z_lo, z_sum, z_bias, vz = (Signal(signed(PRODUCT_BITS)), Signal(signed(PRODUCT_BITS)),
                                         Signal.like(r_sum), Signal.like(bias), Signal())
        m.d.sync += [z_hi.eq(Mux(r_seen, Mux(zc & (r_hi < 0), 0, r_hi), 0)),
                     z_lo.eq(Mux(r_seen, Mux(zc & (r_lo > 0), 0, r_lo), 0)),
                     z_sum.eq(r_sum), z_bias.eq(bias), vz.eq(v6)]
        f_hi, f_lo = Signal(signed(PRODUCT_BITS)), Signal(signed(PRODUCT_BITS))
        part, c_sum, c_bias, v8 = Signal(signed(cfg.acc_bits + 1)), Signal.like(r_sum), Signal.like(bias), Signal()
        if len(self.modes) == 2:
            part_v = Mux(z_mam, z_hi + z_lo, z_sum)
        else:
            part_v = z_hi + z_lo if "mam" in self.modes else z_sum
        m.d.sync += [f_hi.eq(z_hi), f_lo.eq(z_lo), part.eq(part_v), c_sum.eq(z_sum), c_bias.eq(z_bias), v8.eq(vz)]
        m.d.sync += [
            self.res.valid.eq(v8),
            self.res.payload.sum.eq(c_sum),
            self.res.payload.hi.eq(f_hi),
            self.res.payload.lo.eq(f_lo),
            self.res.payload.bias.eq(c_bias),
            self.res.payload.acc.eq(c_bias + part),
        ]
        if self.scales:                            # the row's own requantizer constants
            z_mult, z_shift = Signal(self.cfg.mult_bits), Signal(SHIFT_BITS)
            c_mult, c_shift = Signal(self.cfg.mult_bits), Signal(SHIFT_BITS)
            m.d.sync += [z_mult.eq(bias_fields.mult), z_shift.eq(bias_fields.shift),
                         c_mult.eq(z_mult), c_shift.eq(z_shift),
                         self.res.payload.mult.eq(c_mult), self.res.payload.shift.eq(c_shift)]
        m.d.comb += self.busy.eq(fetching | (rows_left != 0))
        return m


def _delay(m, values, n: int, tag: str):
    """``values`` (a tuple of signals) registered ``n`` times."""
    for d in range(n):
        regs = tuple(Signal(Value.cast(v).shape(), name=f"{tag}{i}_d{d}") for i, v in enumerate(values))
        m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
        values = regs
    return values


def word_layout(fields) -> data.StructLayout:
    """The Amaranth layout of a memory word from its fields in :mod:`mamfpga.compile.arch`
    (contiguous, low bits first, so the StructLayout's offsets are the fields')."""
    offset = 0
    members = {}
    for name, off, width, is_signed in fields:
        assert off == offset, f"field {name} is not contiguous"
        members[name] = signed(width) if is_signed else unsigned(width)
        offset += width
    return data.StructLayout(members)


def act_write_layout(pes: int, addr_bits: int) -> data.StructLayout:
    """One write into the activation buffers: a word of P activations at ``addr`` (its top bit
    the ping-pong side), each byte written where ``mask`` has its bit."""
    return data.StructLayout({"en": 1, "addr": unsigned(addr_bits), "data": unsigned(8 * pes),
                              "mask": unsigned(pes)})


def act_addr_bits_of(program) -> int:
    """Address bits of the activation buffers (both sides) the PEs of ``program`` build."""
    return index_bits(2 * pow2_at_least(act_depth_of(program)))


def act_depth_of(program) -> int:
    """Words of P activations a buffer side needs for the widest layer input or output."""
    cfg = program.config
    return act_side_words(program.widest, cfg.pes, 1 if cfg.lane_copies else cfg.lanes)


def pe_from_program(program, p: int, family: str | None = None) -> PE:
    """PE ``p`` of the accelerator for a compiled :class:`~mamfpga.compile.ir.Program`."""
    weights, high, w_base = program.weight_images(p)
    biases, layers = [], []
    for k, plan in enumerate(program.layers):
        g = plan.geom
        if g is not None:
            st = g.steps()
            extra = dict(origin=int(g.src.base), positions=g.positions, window=tuple(g.pool), out_w=g.out_w,
                         steps=(st["x"], st["y"], st["px"], st["py"]))
        else:
            extra = dict(origin=plan.col_ranges[p] if plan.split else 0)
        layers.append(PELayer(w_base=w_base[k], words=len(plan.words[p]), b_base=len(biases),
                              rows=len(plan.bias[p]), mode=plan.mode, side=k % 2, unsigned=plan.in_unsigned,
                              wide=program.wide(plan), **extra))
        biases += plan.bias[p]
    return PE(program.config, weights=weights, biases=biases, layers=layers, act_depth=act_depth_of(program),
              family=family, scales=program.scales, high=high)
