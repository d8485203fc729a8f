"""The process-wide state a test can leave behind for the next one in the same pytest process
(a script's main run in-process installs signal handlers; a test may set an environment
variable, change directory, add a log handler or switch NNabla's default context): taken
before a test and put back after it by tests/conftest.py."""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

# Set by pytest itself for each phase of a test (setup, call, teardown): not the test's doing.
PYTEST_OWN = {"PYTEST_CURRENT_TEST"}
CATCHABLE = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


@dataclass
class ProcessState:
    signals: Dict[int, Any]
    environ: Dict[str, str]
    cwd: str
    loggers: Dict[str, Tuple[int, List[logging.Handler], bool, bool]]
    context: Any  # nnabla.Context, or None when NNabla is not imported yet


def logger_state(logger: logging.Logger) -> Tuple[int, List[logging.Handler], bool, bool]:
    return logger.level, list(logger.handlers), logger.propagate, logger.disabled


def existing_loggers() -> Dict[str, logging.Logger]:
    """The root logger and every named one created so far (placeholders left out)."""
    named = {name: logger for name, logger in logging.root.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)}
    return {"": logging.root, **named}


def nnabla_context() -> Any:
    import sys

    if "nnabla" not in sys.modules:  # imported by the test, if at all: nothing to restore
        return None
    return sys.modules["nnabla"].get_current_context()


def snapshot() -> ProcessState:
    return ProcessState(
        signals={s: signal.getsignal(s) for s in CATCHABLE},
        environ={k: v for k, v in os.environ.items() if k not in PYTEST_OWN},
        cwd=os.getcwd(),
        loggers={name: logger_state(lg) for name, lg in existing_loggers().items()},
        context=nnabla_context())


def restore(before: ProcessState) -> List[str]:
    """Puts back what changed since `before`; returns what that was, e.g. ['signal SIGTERM',
    'environment FOO', 'cwd'], for a message."""
    changed = []
    for signum, handler in before.signals.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
            changed.append(f"signal {signal.Signals(signum).name}")
    now = {k: v for k, v in os.environ.items() if k not in PYTEST_OWN}
    for key in sorted(set(now) | set(before.environ)):
        if now.get(key) != before.environ.get(key):
            if key in before.environ:
                os.environ[key] = before.environ[key]
            else:
                del os.environ[key]
            changed.append(f"environment {key}")
    if os.getcwd() != before.cwd:
        os.chdir(before.cwd)
        changed.append("cwd")
    loggers = existing_loggers()
    for name, (level, handlers, propagate, disabled) in before.loggers.items():
        logger = loggers[name]
        if logger_state(logger) != (level, handlers, propagate, disabled):
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
            changed.append(f"logger {name or 'root'}")
    if before.context is not None and str(nnabla_context()) != str(before.context):
        import nnabla

        nnabla.set_default_context(before.context)
        changed.append("NNabla's default context")
    return changed
