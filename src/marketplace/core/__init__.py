"""Infrastructure every layer may use: typed params, errors, I/O, paths and databases."""
