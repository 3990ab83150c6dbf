"""The board top behind its UART, co-simulated on Verilator with a UART model speaking the host
protocol: info, stray bytes, a frame cut short, then inferences bit-exact against the golden model
with the cycle count the compiler's model gives."""

import numpy as np
import pytest

from mamfpga.boards import hostlink
from mamfpga.compile.arch import ArchConfig
from mamfpga.sim.cosim import cosimulate_hostlink
import mamfpga.compile as compiler
from tests.support import conv_inputs, random_conv_network, random_network


@pytest.mark.sim
@pytest.mark.parametrize("seed,shapes,density,modes,P,L", [
    (11, [20, 24, 6], 0.3, ["mam", "mac"], 2, 1),
    (15, None, None, None, 4, 2),                       # a conv network (fused pools, borders, per-channel scales)
    (21, [12, 10, 1], 0.4, ["mam", "mac"], 2, 1),       # one output and two: an output FIFO as deep as the
    (22, [12, 10, 2], 0.4, ["mac", "mam"], 2, 1),       # vector lost the second of two back-to-back outputs
])
def test_board_top_over_uart(seed, shapes, density, modes, P, L, tmp_path):
    rng = np.random.default_rng(seed)
    if shapes is None:
        net = random_conv_network(rng, max_hw=6)
        x = conv_inputs(rng, net.input_shape, 4)
    else:
        net = random_network(rng, shapes, density, modes)
        x = rng.integers(-128, 128, size=(4, shapes[0])).astype(np.int8)
        x[0] = 0                                            # an all-zero input
        x[1] = rng.choice([-128, 127], size=shapes[0])       # extremes
    program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L))
    res = cosimulate_hostlink(program, x, tmp_path, divisor=6, ident=0xC0FFEE)

    info = hostlink.decode_info(res.info)
    assert (info.version, info.n_in, info.n_out, info.pes, info.lanes, info.build_id) == \
        (hostlink.VERSION, program.net.input_size, program.net.output_size, P, L, 0xC0FFEE)
    assert res.stray_answer == b"", "stray bytes while idle must get no answer"
    assert res.cut_answer == b"", "a frame cut short must be dropped without an answer"
    assert res.bad_crc_answer == hostlink.error_bytes(hostlink.ERR_CRC), "a wrong CRC is answered 'E' 1 crc"
    assert res.answered.all() and res.tries == [1] * len(x)
    assert res.mismatches == 0, (res.outputs, res.expected)
    assert res.cycles == [program.cycles_model] * len(x)
    assert res.leds & 0b1000, "LED 3 records the timed-out frame"
    assert not res.leds & 0b0100, "no framing error was sent"


@pytest.mark.sim
def test_bit_errors_on_both_wires_never_give_a_wrong_answer(tmp_path):
    """Every bit on both UART wires flipped with probability 1/1000 (about one frame in three hit):
    the board refuses requests whose CRC is wrong ('E'), the host refuses answers whose CRC is
    wrong and sends again; no wrong answer is ever accepted, every sample is answered within the
    retries, and the board still answers afterwards (it never hangs)."""
    rng = np.random.default_rng(21)
    net = random_network(rng, [24, 16, 6], 0.4, ["mam", "mac"])
    x = rng.integers(-128, 128, size=(40, 24)).astype(np.int8)
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=1))
    res = cosimulate_hostlink(program, x, tmp_path, divisor=4, ident=0xBEEF, frame_timeout=600, ber=1e-3,
                              seed=5, retries=8)
    assert res.flips["to_board"] > 0 and res.flips["to_host"] > 0
    assert sum(res.seen.values()) > 0 and max(res.tries) > 1          # errors were met, and retried
    assert res.mismatches == 0, "a wrong answer was accepted"
    assert res.answered.all(), res.tries
    assert res.cycles == [program.cycles_model] * len(x)
    assert hostlink.decode_info(res.info_after).build_id == 0xBEEF
