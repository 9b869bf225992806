"""convloc's functions as leaves of ``torch.fx`` symbolic tracing, as torchvision's ops are.

Called with an ``fx.Proxy`` among its arguments (directly or in a list, like RoI boxes), a
function decorated with :func:`fx_leaf` records one call of itself in the graph instead of
running, so the traced module calls it again with real tensors. torch is not imported here.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _find_proxy(values, proxy_type) -> Any:
    for v in values:
        if isinstance(v, proxy_type):
            return v
        if isinstance(v, (list, tuple)):
            found = _find_proxy(v, proxy_type)
            if found is not None:
                return found
    return None


def fx_leaf(fn: F) -> F:
    @functools.wraps(fn)
    def leaf(*args, **kwargs):
        fx = sys.modules.get("torch.fx")
        if fx is not None:
            proxy = _find_proxy((*args, *kwargs.values()), fx.Proxy)
            if proxy is not None:
                return proxy.tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)

    return leaf  # type: ignore[return-value]
