from mamfpga.boards.targets import Board, register

for size in ("12", "25", "45", "85"):
    register(Board(
        f"ulx3s-{size}f", f"LFE5U-{size}F", f"amaranth_boards.ulx3s:ULX3S_{size}F_Platform",
        clock_hz=150e6,                  # 25 MHz oscillator x 6 through EHXPLLL
        programmer=f"openFPGALoader -b ulx3s BUILD/board-ulx3s-{size}f/mamfpga_board.bit",
        serial="the FT231X, /dev/ttyUSB0 on Linux",
    ))
