"""``gwm db seed``: the demo tenant and deterministic synthetic tenants.

- :func:`seed_demo` creates (or completes) the ``demo`` tenant a newcomer can explore; running it
  again changes nothing.
- :func:`seed_synthetic` creates benchmark tenants ``scale-<seed>-<i>`` with the benchmark harness's
  proportions; the same seed gives the same rows, UUIDs included.

Both take an ``AsyncEngine`` connected as the schema owner role. Row-level security applies to the
owner too, so every transaction sets ``app.tenant_id`` to the tenant it writes.
"""

from server.seed._db import SeedError
from server.seed.demo import DemoSummary, seed_demo
from server.seed.synthetic import SyntheticSummary, SyntheticTenant, seed_synthetic

__all__ = ["DemoSummary", "SeedError", "SyntheticSummary", "SyntheticTenant", "seed_demo", "seed_synthetic"]
