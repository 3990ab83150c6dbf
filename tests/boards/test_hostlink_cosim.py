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
    assert res.mismatches == 0, (res.outputs, res.expected)
    assert res.cycles == [program.cycles_model] * len(x)
    assert res.leds & 0b1000, "LED 3 records the timed-out frame"
    assert not res.leds & 0b0100, "no framing error was sent"
