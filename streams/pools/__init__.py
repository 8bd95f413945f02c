"""Connection pools: pool alerts, the connection budget and pool-size advice (pure core in
``monitor``), the worker's agent (``agent``) and ``dbopt pools`` (``cli``)."""

from streams.pools.monitor import Advice, BudgetView, PoolChange, PoolMonitor, PoolView, service_class

__all__ = ["Advice", "BudgetView", "PoolChange", "PoolMonitor", "PoolView", "service_class"]
