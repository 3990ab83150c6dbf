from mamfpga.boards.targets import Board, register

register(Board(
    "icebreaker", "iCE40UP5K", "amaranth_boards.icebreaker:ICEBreakerPlatform",
    clock_hz=48e6,                       # 12 MHz oscillator x 4 through SB_PLL40_PAD
    programmer="iceprog BUILD/board-icebreaker/mamfpga_board.bin (or openFPGALoader -b ice40_generic)",
    serial="the FTDI's second interface, /dev/ttyUSB1 on Linux",
))
