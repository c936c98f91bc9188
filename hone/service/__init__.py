"""`hone serve --home DIR`: many tenants' models behind API keys, durable across restarts.

Hosts one backend. Tenants, keys and completed requests live in SQLite (`store`); the gate checks
keys, body sizes and requests in flight (`auth`); the training routes of docs/serve-api.md
(`training_api`) and the OpenAI routes of `hone.server` both answer through `Service`, which
names each tenant's models inside the backend and journals every optimizer step to disk.
Knows backends and the high-level train step; knows nothing of rollouts, rewards or environments.
"""

from hone.service.app import create_service_app
from hone.service.service import Service, ServiceConfig

__all__ = ["Service", "ServiceConfig", "create_service_app"]
