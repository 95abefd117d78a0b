"""eqtest: the integration-test harness for Equilibrium.

The pytest fixtures built on it live in tests/integration/conftest.py
(redis, pg_primary, pg_backup, kafka, daemon); docs/development.md
describes them. What tests import directly:

    from eqtest import wait_for, free_port, HarnessError
    from eqtest import http          # request(), RawConnection, raw(), ...
"""

from . import http
from .util import (HarnessError, build_dir, build_path, closed_port, free_port,
                   port_open, wait_for)

__all__ = ["http", "HarnessError", "build_dir", "build_path", "closed_port",
           "free_port", "port_open", "wait_for"]
