from mamfpga.boards.targets import Board, register

# No open place-and-route for 7-series on PyPI: synth exports Verilog, XDC and
# amaranth's Vivado script; the 100 MHz oscillator clocks the design directly.
register(Board(
    "arty-a7-35", "XC7A35T", "amaranth_boards.arty_a7:ArtyA7_35Platform",
    open_flow=False,
    programmer="Vivado's hardware manager (or openFPGALoader -b arty_a7_35t)",
    serial="the FTDI's second interface, /dev/ttyUSB1 on Linux",
))
