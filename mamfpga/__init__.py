"""mamfpga: FPGA accelerators for pruned Multiply-And-Max/min (MAM) networks.

Subpackages: ``mamfpga.sw`` (PyTorch/NumPy), ``mamfpga.hw`` (Amaranth),
``mamfpga.sim`` (cocotb), ``mamfpga.boards`` (board targets, synthesis).
"""

__version__ = "0.1.0"
