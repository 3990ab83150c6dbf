"""The compiler, between the network (``mamfpga.sw``) and the hardware (``mamfpga.hw``).

- :mod:`~mamfpga.compile.arch`: the hardware contract in numbers (word layouts,
  memory depths, tree depths, pipeline latencies, the cycle model), read by the
  passes, the program simulator and the RTL alike;
- :mod:`~mamfpga.compile.device`: the FPGA devices' capacities;
- :mod:`~mamfpga.compile.ir`: the IR, :class:`Program` of :class:`LayerPlan`;
- :mod:`~mamfpga.compile.passes`: the passes and :func:`compile_network`;
- :mod:`~mamfpga.compile.build`: a build folder written and read back;
- :mod:`~mamfpga.compile.progsim`: the program simulator (the memory images run as the RTL runs them).

Imports run one way: this package reads ``mamfpga.sw`` and nothing of
``mamfpga.hw``, ``mamfpga.sim`` or ``mamfpga.boards``.
"""

from mamfpga.compile.arch import ArchConfig
from mamfpga.compile.build import load_build, write_build
from mamfpga.compile.device import DEVICES, Device, device
from mamfpga.compile.ir import CompileError, LayerPlan, MemoryFitError, Program
from mamfpga.compile.passes import check_capacity, compile_network, memory_use, supported

__all__ = ["ArchConfig", "Device", "DEVICES", "device", "CompileError", "MemoryFitError", "LayerPlan", "Program",
           "compile_network", "memory_use", "check_capacity", "supported", "write_build", "load_build"]
