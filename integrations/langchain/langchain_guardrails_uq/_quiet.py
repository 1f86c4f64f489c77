"""Running a wrapped model out of sight of stream consumers, so nobody reads text the output phase has not seen.

LangChain hands a model's tokens to every *streaming* callback handler of the run: ``astream_events``,
``astream_log``, LangGraph's ``stream_mode="messages"``. A guarded component calls its model with a copy of
its callbacks from which those handlers are removed; tracers and every other handler keep seeing the call.
What stream consumers then receive is what the component returns, after the policy decided.
"""

from __future__ import annotations

import contextvars
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackManager, CallbackManager
from langchain_core.callbacks.manager import AsyncRunManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

try:  # the marker class of LangChain's v2 stream handlers
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    _MARKERS: tuple[type, ...] = (_V2StreamingCallbackHandler,)
except ImportError:  # pragma: no cover - older langchain-core
    _MARKERS = ()


def is_streaming(handler: Any) -> bool:
    """True for a handler that forwards a run's tokens or outputs to a stream consumer: LangChain's
    ``_StreamingCallbackHandler`` protocol (``tap_output_iter``: astream_events, astream_log, LangGraph's
    messages stream) or its v2 marker class. (An attribute test: isinstance on the protocol is slow.)"""
    return callable(getattr(handler, "tap_output_iter", None)) or isinstance(handler, _MARKERS)


def without_streaming(manager: Any) -> Any:
    """A copy of a callback manager (or list of handlers) without streaming handlers; None stays None."""
    if manager is None:
        return None
    if isinstance(manager, list):
        return [h for h in manager if not is_streaming(h)]
    if isinstance(manager, BaseCallbackManager):
        quiet = manager.copy()
        for handler in [*quiet.handlers, *quiet.inheritable_handlers]:
            if is_streaming(handler):
                quiet.remove_handler(handler)
        return quiet
    return manager


def quiet_config(run_manager: Any) -> RunnableConfig:
    """The config for a wrapped model call made inside a run (a model's run has no ``get_child``): callbacks
    for a child of that run (so tracers nest the call under it), minus streaming handlers."""
    if run_manager is None:
        return RunnableConfig(callbacks=without_streaming(_current_callbacks()) or [])
    kind = AsyncCallbackManager if isinstance(run_manager, AsyncRunManager) else CallbackManager
    child = kind(handlers=[], parent_run_id=run_manager.run_id)
    child.set_handlers([h for h in run_manager.inheritable_handlers if not is_streaming(h)])
    child.add_tags(run_manager.inheritable_tags)
    child.add_metadata(run_manager.inheritable_metadata)
    return RunnableConfig(callbacks=child)


def _current_callbacks() -> Any:
    config = var_child_runnable_config.get()
    return (config or {}).get("callbacks")


def quiet_context() -> contextvars.Context:
    """A copy of the current context in which runnables invoked without a config (as LangChain's agent
    factory invokes the model) inherit the current callbacks minus streaming handlers. Run the model call
    in it: ``context.run(handler, request)`` or ``asyncio.create_task(coro, context=context)``."""
    context = contextvars.copy_context()
    config = var_child_runnable_config.get()
    if config is not None:
        quiet = {**config, "callbacks": without_streaming(config.get("callbacks"))}
        context.run(var_child_runnable_config.set, quiet)  # type: ignore[arg-type]
    return context
