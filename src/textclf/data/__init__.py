"""Data: reading a user's table (CSV, TSV, JSON Lines, Parquet), checking it row by row, and
the split and label-map files the stages pass on.

Imports only the shared modules (errors, outputs, canonical). A new file format or a new
data check goes here; a new pipeline stage that transforms data is a command module above.
"""
