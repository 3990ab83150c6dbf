"""One file per board (or board family): each calls ``targets.register(Board(...))``."""
