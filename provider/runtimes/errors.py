"""Errors of the sandbox backends, as hashgrid.errors subclasses so codes, components and retry hints agree.

A task that cannot start (bad image, unknown runtime) is the caller's problem (`InvalidInput`); an engine that
misbehaves is ours and may be retried (`SandboxFailed`).
"""

from __future__ import annotations

from hashgrid.errors import HashgridError, InvalidInput, NotFound


class UnknownRuntime(InvalidInput):
    """The spec names a runtime this code has no backend for."""

    code = "unknown_runtime"
    component = "provider"


class RuntimeUnavailable(HashgridError):
    """The backend exists but does not work on this device (no engine, runsc not registered...)."""

    code = "runtime_unavailable"
    component = "provider"
    http_status = 503


class InvalidImageReference(InvalidInput):
    """Images are named by their local id `sha256:<64 hex>`, never by a tag that could move."""

    code = "invalid_image_reference"
    component = "provider"


class ImageNotFound(InvalidInput):
    """The image id is well formed but absent from the local engine (there is no registry to pull from)."""

    code = "image_not_found"
    component = "provider"
    http_status = 404


class InvalidRunRequest(InvalidInput):
    """A RunRequest that a backend cannot honour (bad run id, no module, network under runsc...)."""

    code = "invalid_run_request"
    component = "provider"


class UnknownRun(NotFound):
    """A handle that this backend never started or already reported."""

    code = "unknown_run"
    component = "provider"


class SandboxFailed(HashgridError):
    """The engine failed while creating, running or cleaning up a sandbox; a retry may help."""

    code = "sandbox_failed"
    component = "provider"
    retryable = True
    http_status = 503
