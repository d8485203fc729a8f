"""The training recipe (cfg/*.yaml).

Its keys declared once, strict loading, the schedules and solvers it names, and the
table of keys.
"""
