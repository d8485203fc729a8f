"""The process every script runs as.

Start-up, the errors a user can fix, atomic files, the launch, compute context and
communicator, memory, stop signals, the hang watchdog and progress bars.
"""
