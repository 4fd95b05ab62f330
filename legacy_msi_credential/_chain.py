"""What both ``DefaultAzureCredential`` twins share: reading their own options, placing the legacy step.

azure-identity builds its chain; this module decides whether the legacy step belongs in
it and where: immediately before azure-identity's ``ManagedIdentityCredential``, whenever
that one is in the chain. Nothing here imports azure-identity.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

from ._constants import EXTRA_HINT
from ._errors import unavailable
from ._retry import check_seconds

#: ``AZURE_TOKEN_CREDENTIALS`` value (case-insensitive) that selects the legacy step alone.
ONLY_LEGACY = "legacymsicredential"
ENV_TOKEN_CREDENTIALS = "AZURE_TOKEN_CREDENTIALS"
#: The keywords azure-identity's ``DefaultAzureCredential`` hands on to its credentials that
#: are about the HTTP pipeline: the legacy step receives them as ``ManagedIdentityCredential``
#: does, so that a caller's transport, say, is never bypassed.
PIPELINE_KEYWORDS = ("transport", "logging_enable", "user_agent", "headers", "proxies")
#: ``identity_config`` keys naming a user-assigned identity, and the legacy step's parameter for each.
IDENTITY_CONFIG_KEYS = {
    "client_id": "client_id",
    "object_id": "object_id",
    "resource_id": "msi_res_id",
    "msi_res_id": "msi_res_id",
    "mi_res_id": "msi_res_id",
}


@dataclass(frozen=True)
class LegacyStepOptions:
    """The legacy step's settings, taken out of the keyword arguments before azure-identity sees them."""

    excluded: bool
    only_legacy: bool
    client_id: Optional[str]
    wait_for_endpoint: float
    endpoint: Optional[str]
    identity: tuple[tuple[str, str], ...] = ()
    pipeline: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def take(cls, kwargs: dict[str, Any]) -> LegacyStepOptions:
        """Pop this package's keywords from ``kwargs``; read (not pop) the ones azure-identity shares."""
        excluded = bool(kwargs.pop("exclude_legacy_msi_credential", False))
        # The caller's own argument: a bad value is their ValueError, not a stand-in step.
        wait = check_seconds("legacy_msi_wait_for_endpoint", kwargs.pop("legacy_msi_wait_for_endpoint", 0))
        endpoint = kwargs.pop("legacy_msi_endpoint", None)
        selected = os.environ.get(ENV_TOKEN_CREDENTIALS, "").strip().lower()
        if "managed_identity_client_id" in kwargs:
            client_id = kwargs["managed_identity_client_id"]
        else:
            client_id = os.environ.get("AZURE_CLIENT_ID")
        config = kwargs.get("identity_config") or {}
        identity = tuple(
            (IDENTITY_CONFIG_KEYS[key], str(value))
            for key, value in (config.items() if isinstance(config, dict) else ())
            if key in IDENTITY_CONFIG_KEYS and value
        )
        return cls(
            excluded=excluded,
            only_legacy=selected == ONLY_LEGACY,
            client_id=client_id or None,
            wait_for_endpoint=wait,
            endpoint=endpoint,
            identity=identity,
            pipeline=tuple((name, kwargs[name]) for name in PIPELINE_KEYWORDS if name in kwargs),
        )

    def credential_kwargs(self) -> dict[str, Any]:
        """The legacy step's arguments: the identity as ``ManagedIdentityCredential`` gets it
        (``identity_config`` first, else ``managed_identity_client_id`` or ``AZURE_CLIENT_ID``),
        and the pipeline keywords it gets."""
        options: dict[str, Any] = {"wait_for_endpoint": self.wait_for_endpoint, **dict(self.pipeline)}
        if self.identity:
            options.update(self.identity)
        elif self.client_id:
            options["client_id"] = self.client_id
        if self.endpoint is not None:
            options["endpoint"] = self.endpoint
        return options


class UnusableLegacyStep:
    """Stands in the chain for a legacy step that could not be made (a bad URL in the environment).

    It is "unavailable" on every call, so that the chain moves on and its message says why.
    """

    _credential_name = "LegacyMsiCredential"

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def _fail(self) -> None:
        raise unavailable(f"LegacyMsiCredential could not be configured: {self._reason}")

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self._fail()

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        self._fail()

    def close(self) -> None:
        return None

    def __enter__(self) -> UnusableLegacyStep:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class AsyncUnusableLegacyStep(UnusableLegacyStep):
    """The async form of :class:`UnusableLegacyStep`."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self._fail()

    async def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        self._fail()

    async def close(self) -> None:  # type: ignore[override]
        return None

    async def __aenter__(self) -> AsyncUnusableLegacyStep:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None


class IdentityInit:
    """azure-identity's ``DefaultAzureCredential.__init__``, run as written, its collaborators patchable here.

    azure-identity's class builds its chain from the names of the module that defines it
    (``ManagedIdentityCredential``, ``AzureCliCredential``, ``os``...), and its own tests
    patch them there: ``patch(DefaultAzureCredential.__module__ + ".ManagedIdentityCredential")``.
    For the drop-in to be that class plus one step, its module holds the same names, and
    azure-identity's ``__init__`` code runs against azure-identity's module with any name
    replaced in the drop-in's module (by a test's ``patch``) taking precedence. A patch of
    azure-identity's module works as before.

    It also records what ``ManagedIdentityCredential(...)`` returned, so that the legacy step
    goes right before that step: no ``isinstance`` check, which a patched class defeats.
    """

    def __init__(self, identity_class: type, namespace: dict[str, Any]) -> None:
        """Mirror into ``namespace`` (the drop-in module's globals) the names ``identity_class.__init__`` reads.

        Args:
            identity_class: azure-identity's ``DefaultAzureCredential`` (sync or aio).
            namespace: The globals of the module defining the drop-in.
        """
        self._module = sys.modules[identity_class.__module__]
        self._function: types.FunctionType = vars(identity_class)["__init__"]
        module_names = vars(self._module)
        names = [
            name
            for name in self._function.__code__.co_names
            # the class's own name stays azure-identity's: its __init__ may call super(DefaultAzureCredential, self)
            if name in module_names and module_names[name] is not identity_class
        ]
        for name in names:
            namespace.setdefault(name, module_names[name])
        self._namespace = namespace
        self._mirrored = {name: namespace[name] for name in names}

    def __call__(self, credential: Any, kwargs: dict[str, Any]) -> list[Any]:
        """Run azure-identity's ``__init__`` on ``credential``; return the managed identity steps it made."""
        names = dict(vars(self._module))
        names.update(
            (name, self._namespace[name])
            for name, original in self._mirrored.items()
            if self._namespace.get(name) is not original
        )
        made: list[Any] = []
        managed_identity = names.get("ManagedIdentityCredential")
        if managed_identity is not None:

            def recording(*args: Any, **options: Any) -> Any:
                made.append(managed_identity(*args, **options))
                return made[-1]

            names["ManagedIdentityCredential"] = recording
        function = self._function
        run = types.FunctionType(
            function.__code__, names, function.__name__, function.__defaults__, function.__closure__
        )
        run.__kwdefaults__ = function.__kwdefaults__
        run(credential, **kwargs)
        return made


@dataclass(frozen=True)
class ChainParts:
    """What differs between the sync and async ``DefaultAzureCredential`` twins.

    Attributes:
        identity_init: azure-identity's ``DefaultAzureCredential.__init__`` (sync or aio), run by
            :class:`IdentityInit`.
        chained_init: azure-identity's ``ChainedTokenCredential.__init__``, for the legacy step alone.
        make: This package's ``LegacyMsiCredential`` (sync or aio).
        unusable: The stand-in for a legacy step that could not be made.
    """

    identity_init: IdentityInit
    chained_init: Callable[..., None]
    make: Callable[..., Any]
    unusable: type[UnusableLegacyStep]

    @classmethod
    def of(
        cls,
        identity_class: type,
        chained_class: type[Any],
        make: Callable[..., Any],
        unusable: type[UnusableLegacyStep],
        namespace: dict[str, Any],
    ) -> ChainParts:
        """A twin's parts: azure-identity's ``DefaultAzureCredential`` and ``ChainedTokenCredential``
        classes, this package's credential and stand-in, and the twin module's ``globals()``
        (where azure-identity's ``__init__`` reads its collaborators, see :class:`IdentityInit`)."""
        return cls(IdentityInit(identity_class, namespace), chained_class.__init__, make, unusable)


class DropIn:
    """What both ``DefaultAzureCredential`` twins add to azure-identity's class: the legacy step
    placed in its chain, and a pickle of the arguments only. Listed before azure-identity's
    class among a twin's bases; the twin names its :class:`ChainParts` as ``_parts``."""

    _parts: ClassVar[ChainParts]

    def __init__(self, **kwargs: Any) -> None:
        build_chain(self, kwargs, self._parts)

    def __reduce__(self) -> Any:
        """Pickled: its arguments, never a secret, token or connection (see :func:`reduce`)."""
        return reduce(self)


def build_chain(credential: Any, kwargs: dict[str, Any], parts: ChainParts) -> None:
    """Initialise a ``DefaultAzureCredential`` twin: azure-identity's chain, the legacy step placed in it.

    Args:
        credential: The new ``DefaultAzureCredential``.
        kwargs: Its keyword arguments; this package's own are taken out first.
        parts: The twin's azure-identity and legacy classes.
    """
    identity_init, chained_init, make, unusable = parts.identity_init, parts.chained_init, parts.make, parts.unusable
    # What a pickled copy is made from (see reduce): the caller's arguments, never a transport.
    credential._legacy_msi_arguments = {name: value for name, value in kwargs.items() if name != "transport"}
    options = LegacyStepOptions.take(kwargs)
    if options.only_legacy:
        # azure-identity does not know this value: the chain is the legacy step alone. An
        # explicit exclusion wins over the environment, as it does in azure-identity.
        if "tenant_id" in kwargs:  # the one keyword azure-identity's class refuses, refused alike
            raise TypeError("'tenant_id' is not supported in DefaultAzureCredential.")
        if options.excluded or kwargs.get("exclude_managed_identity_credential"):
            raise ValueError(
                f"{ENV_TOKEN_CREDENTIALS}=LegacyMsiCredential selects a step that exclude_* removes: "
                "at least one credential is required"
            )
        chained_init(credential, legacy_step(options, make, unusable))
        return
    managed_identity_steps = identity_init(credential, kwargs)
    if not options.excluded and managed_identity_steps:
        step = legacy_step(options, make, unusable)
        credential.credentials = with_legacy_step(credential.credentials, step, managed_identity_steps[0])


def reduce(credential: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``__reduce__`` for both twins: a pickle carries the arguments the credential was made with.

    Never what its steps hold: a secret azure-identity read from the environment
    (``AZURE_CLIENT_SECRET``, ``AZURE_PASSWORD``...), a cached token, a lock, a session or an
    event loop's objects. The copy is made anew, reading the environment where it is
    unpickled, as a credential made there would.
    """
    return rebuild, (type(credential), credential._legacy_msi_arguments)


def rebuild(cls: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Make a ``DefaultAzureCredential`` twin from a pickled configuration."""
    return cls(**arguments)


def legacy_step(options: LegacyStepOptions, make: Callable[..., Any], unusable: type[UnusableLegacyStep]) -> Any:
    """The legacy credential for the chain, or a stand-in saying why it could not be made.

    In the chain, scopes it cannot use make it "unavailable", so that the chain goes on to
    azure-identity's managed identity step and ends where azure-identity's chain would.
    """
    try:
        step = make(**options.credential_kwargs())
    except ValueError as exc:
        return unusable(str(exc))
    step._in_chain = True
    return step


def with_legacy_step(credentials: tuple[Any, ...], step: Any, managed_identity: Any) -> tuple[Any, ...]:
    """``credentials`` with ``step`` right before ``managed_identity``, if it is there."""
    for index, credential in enumerate(credentials):
        if credential is managed_identity:
            return (*credentials[:index], step, *credentials[index:])
    return credentials


def import_error(error: ImportError) -> ImportError:
    return ImportError(
        f"DefaultAzureCredential from legacy-msi-credential extends azure-identity's, which is not "
        f"installed: {EXTRA_HINT}"
    )
