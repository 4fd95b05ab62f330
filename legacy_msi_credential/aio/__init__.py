"""The async twins: ``LegacyMsiCredential`` and ``DefaultAzureCredential`` for ``azure.*.aio`` clients."""

from typing import TYPE_CHECKING, Any

from ._credential import LegacyMsiCredential

if TYPE_CHECKING:
    from ._default import DefaultAzureCredential

__all__ = ["DefaultAzureCredential", "LegacyMsiCredential"]


def __getattr__(name: str) -> Any:
    # Imported on first use: azure-identity is an extra, and importing this package never imports it.
    if name == "DefaultAzureCredential":
        from ._default import DefaultAzureCredential

        return DefaultAzureCredential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names and the module's own, not those it imports for its own use.
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))
